import re

import pytest
from cityscapesscripts.helpers import labels as official_scripts

from worker.cityscapes.labels import (
    OFFICIAL_LABELS,
    Label,
    LabelMap,
    normalize_name,
    parse_color,
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
        ([("car", (0, 0, 0)), ("Car", (1, 1, 1))], "^label names 'car' and 'Car' are the same label$"),
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


@pytest.mark.parametrize("text, message", [
    ("0 0 background", " line 1: expected 'r g b name', got '0 0 background'"),
    ("0 0 0 void\n0 0 300 x", " line 2: colour [0, 0, 300] is not three integers 0-255"),
    ("a b c d", " line 1: expected 'r g b name'"),
    ("0 0 0 void\n\nX", " line 3: expected 'r g b name', got 'X'"),
    ("0 0 0 void\n\x0b", " line 2: expected 'r g b name'"),  # a vertical tab is not a blank
    ("0 0 0 ro\x01ad", " line 1: label name 'ro\\x01ad' has control characters, line breaks or"
                       " edge spaces"),
    ("# only a comment", ": no labels"),
])
def test_bad_label_color_lines_are_refused_with_their_line_number(text, message):
    with pytest.raises(LabelMapError, match="^label_color.txt" + re.escape(message)):
        parse_label_color_txt(text)


def test_label_color_txt_with_crlf_line_ends_reads_as_with_lf():
    text = "0 0 0 background\r\n128 64 128 road\r\n"
    assert parse_label_color_txt(text) == [("background", (0, 0, 0)), ("road", (128, 64, 128))]


def test_label_color_txt_starts_with_the_header_of_the_format_description():
    assert LabelMap.cityscapes().to_label_color_txt().split("\n")[0] == "# r g b label_name"


def test_a_label_color_txt_of_other_labels_gives_ids_by_line_and_instances_but_to_the_first():
    lines = [("void", (0, 0, 0)), ("tree", (0, 255, 0)), ("cat", (1, 2, 3))]
    label_map = LabelMap.from_label_color_txt(lines)
    assert label_map.official is False
    assert [(lb.name, lb.id, lb.color, lb.has_instances) for lb in label_map.labels] == [
        ("void", 0, (0, 0, 0), False), ("tree", 1, (0, 255, 0), True), ("cat", 2, (1, 2, 3), True)]


def test_the_official_table_read_back_from_its_label_color_txt_is_the_official_map():
    label_map = LabelMap.cityscapes()
    read = LabelMap.from_label_color_txt(parse_label_color_txt(label_map.to_label_color_txt()))
    assert read.official is True and read.labels == label_map.labels


@pytest.mark.parametrize("count, fits", [(256, True), (257, False)])  # labelIds PNGs are 8-bit
def test_at_most_256_labels_with_the_background(count, fits):
    names = [("background", (0, 0, 0))] + [(f"l{i}", (0, 0, i % 256)) for i in range(count - 1)]
    for make in (LabelMap.from_task, LabelMap.from_label_color_txt):
        if fits:
            assert len(make(names).labels) == count
        else:
            with pytest.raises(LabelMapError, match=f"^{count} labels.*at most 256$"):
                make(names)


def test_custom_mode_keeps_official_names_in_the_task_order_and_an_unknown_mode_is_refused():
    task = [("unlabeled", (0, 0, 0)), ("car", (0, 0, 142)), ("road", (128, 64, 128))]
    label_map = LabelMap.from_task(task, "custom")
    assert label_map.official is False
    assert [(lb.name, lb.id) for lb in label_map.labels] == [("unlabeled", 0), ("car", 1), ("road", 2)]
    with pytest.raises(LabelMapError, match="^label map 'coco' is not one of source, cityscapes"):
        LabelMap.from_task(task, "coco")


def test_one_label_outside_the_official_table_makes_the_map_custom():
    label_map = LabelMap.from_task([("car", (0, 0, 142)), ("tree", (0, 255, 0))])
    assert label_map.official is False and label_map.lookup("tree").id == 2


def test_manifest_labels_are_names_and_lowercase_hex_colours_by_id():
    label_map = LabelMap.from_task([("Tree", (0, 255, 171)), ("cat", (1, 2, 3))])
    assert label_map.manifest_labels() == [{"name": "background", "color": "#000000"},
                                           {"name": "Tree", "color": "#00ffab"},
                                           {"name": "cat", "color": "#010203"}]


@pytest.mark.parametrize("value, colour", [("#00FFab", (0, 255, 171)), ([0, 255, 7], (0, 255, 7))])
def test_colours_in_either_case_or_as_numbers(value, colour):
    assert parse_color(value, "x") == colour


@pytest.mark.parametrize("value", [[0, 0, 256], [0, -1, 0], [1, 2], "#00ff0", "00ff00"])
def test_colours_out_of_range_are_refused(value):
    with pytest.raises(LabelMapError, match=r"^labels\[3\]: colour .* is not"):
        parse_color(value, "labels[3]")


@pytest.mark.parametrize("name", ["", " car", "car ", "a\nb"])
def test_names_that_cannot_be_a_line_of_label_color_txt_are_refused_there(name):
    label_map = LabelMap([Label("background", 0, (0, 0, 0), False), Label(name, 1, (1, 1, 1), True)],
                         official=False)
    with pytest.raises(LabelMapError, match="cannot be a line of label_color.txt$"):
        label_map.to_label_color_txt()


def test_normalize_name():
    assert normalize_name("Rectification  Border") == normalize_name("rectification_border")
