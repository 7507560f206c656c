import pytest
from cityscapesscripts.helpers import labels as official_scripts

from worker.cityscapes.labels import (
    OFFICIAL_LABELS,
    LabelMap,
    normalize_name,
    parse_label_color_txt,
)
from worker.errors import LabelMapError
from worker.synth import SEED_COLORS

SEED = [(name, tuple(int(c[i : i + 2], 16) for i in (1, 3, 5))) for name, c in SEED_COLORS.items()]


def test_official_table_is_the_one_of_the_official_scripts():
    theirs = [
        (lb.name, lb.id, lb.trainId, lb.hasInstances, tuple(lb.color))
        for lb in official_scripts.labels
    ]
    ours = [(lb.name, lb.id, lb.train_id, lb.has_instances, lb.color) for lb in OFFICIAL_LABELS]
    assert ours == theirs


@pytest.mark.parametrize(
    "name, expected_id",
    [("trafficlight", 19), ("Traffic_Light", 19), ("ego-vehicle", 1), ("cargroup", None),
     ("background", 0), ("car", 26), ("licenseplate", -1)],
)
def test_seed_spellings_find_the_official_label(name, expected_id):
    label = LabelMap.cityscapes().lookup(name)
    assert (label.id if label else None) == expected_id


def test_task_with_seed_labels_gets_the_official_table_and_keeps_its_spelling_in_label_color():
    label_map = LabelMap.from_task(SEED, "source")
    assert label_map.official
    lines = [ln for ln in label_map.to_label_color_txt().splitlines() if not ln.startswith("#")]
    assert len(lines) == 34  # ids 0-33; the license plate (-1) has no pixel value
    assert lines[0] == "0 0 0 unlabeled"
    assert lines[19] == "250 170 30 trafficlight"  # the task's spelling, at the official id
    assert lines[1] == "0 0 0 ego vehicle"  # not a task label: the official spelling


def test_custom_labels_follow_task_order_with_background_first():
    label_map = LabelMap.from_task([("tree", (0, 255, 0)), ("background", (0, 0, 0)), ("cat", (1, 2, 3))])
    assert not label_map.official
    assert [(lb.name, lb.id, lb.has_instances) for lb in label_map.labels] == [
        ("background", 0, False), ("tree", 1, True), ("cat", 2, True)]
    assert label_map.to_label_color_txt().splitlines()[1:] == [
        "0 0 0 background", "0 255 0 tree", "1 2 3 cat"]


def test_background_is_added_when_missing():
    label_map = LabelMap.from_task([("tree", (0, 255, 0))])
    assert label_map.labels[0].name == "background" and label_map.labels[1].id == 1


def test_cityscapes_mode_forces_the_official_table():
    label_map = LabelMap.from_task([("tree", (0, 255, 0)), ("car", (0, 0, 142))], "cityscapes")
    assert label_map.official and label_map.lookup("tree") is None


@pytest.mark.parametrize(
    "labels, message",
    [
        ([("car", (0, 0, 0)), ("Car", (1, 1, 1))], "same label"),
        ([("", (0, 0, 0))], "empty"),
        ([("bad\nname", (0, 0, 0))], "control"),
        ([("#comment", (0, 0, 0))], "leading"),
        ([(f"l{i}", (0, 0, 0)) for i in range(300)], "at most 256"),
    ],
)
def test_bad_task_labels_are_refused(labels, message):
    with pytest.raises(LabelMapError, match=message):
        LabelMap.from_task(labels)


def test_label_color_txt_round_trip_with_comments_and_spaces_in_names():
    text = "# r g b label_name\n0 0 0 background\n\n128 64 128 road surface\n"
    assert parse_label_color_txt(text) == [("background", (0, 0, 0)), ("road surface", (128, 64, 128))]
    label_map = LabelMap.from_task(parse_label_color_txt(text))
    assert parse_label_color_txt(label_map.to_label_color_txt()) == parse_label_color_txt(text)


@pytest.mark.parametrize("text", ["0 0 background", "0 0 300 x", "a b c d", "# only a comment"])
def test_bad_label_color_lines_are_refused(text):
    with pytest.raises(LabelMapError):
        parse_label_color_txt(text)


def test_normalize_name():
    assert normalize_name("Rectification  Border") == normalize_name("rectification_border")
