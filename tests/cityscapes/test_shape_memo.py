"""Reading a manifest again with the memo an earlier reading left (shape_memo) must come to what
reading it without one comes to: every image's shapes, field for field and in drawing order,
and every problem, word for word. The edits are made by hand to the JSON text, as an editor
or another tool would leave it, including edits the memo must not be fooled by: an image's
height changed under its shapes, an image removed, a mask's image resized, a file changed
after it was read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xxhash

from worker.cityscapes import manifest as M
from worker.cityscapes.quick_json import Entry
from worker.cityscapes.shape_memo import ShapeMemo
from worker.errors import ManifestError


def base() -> dict:
    images = [{"id": 1, "name": "a/a_000001_000019.png", "width": 64, "height": 32},
              {"id": "two", "name": "b/b_000002_000019.png", "width": 64, "height": 32},
              {"id": 3, "name": "c/c_000003_000019.png", "width": 40, "height": 20}]
    shapes = [
        {"image": 1, "label": "road", "type": "polygon", "points": [0, 0, 63, 0, 63, 31, 0, 31]},
        {"image": "two", "label": "car", "type": "rectangle", "points": [1.5, 2.5, 30, 20],
         "z_order": 2, "attributes": {"is_crowd": "true"}},
        {"image": 1, "label": "car", "type": "polygon", "points": [5, 5, 20, 5, 12, 18],
         "instance": 7, "z_order": -1},
        {"image": 3, "label": "car", "type": "mask",
         "rle": {"size": [20, 40], "counts": [100, 50, 650]}},
        {"image": "two", "label": "person", "type": "polygon", "points": [9, 9, 19, 9, 14, 30],
         "extra": ["kept", {"as": "is"}]},
        {"image": 3, "label": "road", "type": "polygon", "points": [0, 0, 39, 0, 20, 19]},
        {"image": 1, "label": "sky", "type": "polygon", "points": [1e-3, 0, 62.25, 0, 30, 4.5]},
    ]
    return {"version": 1, "labels": [{"name": "road", "color": "#804080"},
                                     {"name": "car", "color": "#00008e"},
                                     {"name": "person", "color": "#dc143c"},
                                     {"name": "sky", "color": "#4682b4"}],
            "images": images, "shapes": shapes}


def write(path: Path, manifest: dict, shapes_first: bool = False, **style) -> Path:
    if shapes_first:  # read in two passes: the shapes are met before the images are known
        manifest = {"shapes": manifest["shapes"], **manifest}
    path.write_text(json.dumps(manifest, **style))
    return path


def read(path: Path, workdir: Path, memo: ShapeMemo | None = None, learn: bool = False):
    """The manifest, or its problems. With `memo`, it is recalled whatever the images are
    (a kept memo is found by its images' digest; here it is handed over regardless)."""
    workdir.mkdir()
    recall = (lambda digest: memo) if (memo is not None or learn) else None
    try:
        return M.read_manifest(path, workdir, recall)
    except ManifestError as exc:
        return exc.problems


def shapes(manifest) -> list[list[tuple]]:
    if isinstance(manifest, list):
        return manifest  # problems
    return [[(s.index, s.label, s.kind, s.z_order, s.is_crowd, s.instance, s.points.tolist(),
              s.points.dtype.str, s.rle, s.digest) for s in manifest.shapes_of(i)]
            for i in range(len(manifest.images))]


def learnt(tmp_path: Path, manifest: dict) -> ShapeMemo:
    first = read(write(tmp_path / "first.json", manifest), tmp_path / "first", learn=True)
    assert first.memo is not None
    return first.memo


def moved(m):
    m["shapes"][2]["points"][0] += 1


def added(m):
    m["shapes"].insert(1, {"image": 3, "label": "sky", "type": "polygon", "points": [0, 0, 5, 5, 0, 5]})


def removed(m):
    del m["shapes"][0]


def relabelled(m):
    m["shapes"][4]["label"] = "car"


def reordered(m):
    m["shapes"][0]["z_order"] = 5


def taller(m):
    m["images"][0]["height"] = 300  # same shapes: their edge rows are counted anew


def mask_image_resized(m):
    m["images"][2]["width"] = 41  # the mask no longer covers it


def image_gone(m):
    del m["images"][1]  # its shapes name an image that is not there


def broken_shape(m):
    m["shapes"][5]["points"] = [0, 0, 1]


def unchanged(m):
    pass


EDITS = [moved, added, removed, relabelled, reordered, taller, mask_image_resized, image_gone,
         broken_shape, unchanged]


@pytest.mark.parametrize("style", [{}, {"indent": 2}, {"separators": (",", ":")},
                                   {"shapes_first": True}])
@pytest.mark.parametrize("edit", EDITS, ids=lambda e: e.__name__)
def test_the_memo_changes_nothing_the_reading_comes_to(tmp_path, edit, style):
    memo = learnt(tmp_path, base())
    edited = base()
    edit(edited)
    path = write(tmp_path / "edited.json", edited, **style)
    without = read(path, tmp_path / "without")
    with_memo = read(path, tmp_path / "with", memo)
    assert shapes(with_memo) == shapes(without)
    if not isinstance(without, list):
        assert [with_memo.store.refs_of(i) for i in range(len(with_memo.images))] == \
               [([s[0] for s in image], [s[-1].hex() for s in image]) for image in shapes(without)]


def test_an_unchanged_reading_builds_no_shape_the_memo_vouches_for(tmp_path, monkeypatch):
    memo = learnt(tmp_path, base())
    assert len(memo) == 6  # every shape but the mask
    path = write(tmp_path / "again.json", base())
    built = []
    real = M._validated_shapes
    monkeypatch.setattr(M, "_validated_shapes", lambda group: built.extend(group) or real(group))
    again = read(path, tmp_path / "again", memo)
    assert [raw["type"] for raw in built] == ["mask"]
    assert again.memo is not None and sorted(again.memo.digests) == sorted(memo.digests)


def test_limits_count_the_shapes_the_memo_vouches_for(tmp_path, monkeypatch):
    memo = learnt(tmp_path, base())
    path = write(tmp_path / "again.json", base())
    for name, value in (("MAX_SHAPES_PER_IMAGE", 2), ("MAX_EDGE_ROWS", 40)):
        with monkeypatch.context() as patch:
            patch.setattr(M, name, value)
            without = read(path, tmp_path / f"without-{name}")
            with_memo = read(path, tmp_path / f"with-{name}", memo)
        assert isinstance(without, list) and without == with_memo


def test_a_file_changed_after_its_reading_is_refused_not_drawn(tmp_path):
    memo = learnt(tmp_path, base())
    path = write(tmp_path / "again.json", base())
    again = read(path, tmp_path / "again", memo)
    data = path.read_bytes()
    at = data.index(b"62.25")
    path.write_bytes(data[:at] + b"62.75" + data[at + 5:])  # same length, another vertex
    with pytest.raises(ManifestError, match="changed while being read"):
        again.shapes_of(0)


def test_a_damaged_memo_is_not_used():
    memo = ShapeMemo()
    for k in range(5):
        memo.add(xxhash.xxh3_128_digest(bytes([k])), json.dumps(k).encode(), k - 2, 32, 3 * k)
    data = memo.to_bytes()
    back = ShapeMemo.from_bytes(data)
    assert back is not None
    assert [back.get(d) for d in memo.digests] == [memo.get(d) for d in memo.digests]
    flipped = bytearray(data)
    flipped[-3] ^= 1
    for damaged in (data[:-1], bytes(flipped), b"", b"CSSM1", b"CSSM0" + data[5:],
                    data[:10] + b"X" + data[11:]):  # the head no longer JSON
        assert ShapeMemo.from_bytes(damaged) is None


def test_entries_say_where_their_bytes_lie(tmp_path):
    path = write(tmp_path / "m.json", base(), indent="\t")
    data = path.read_bytes()
    with open(path, "rb") as stream:
        values = M.TopLevelValues(stream, str(path), ("shapes.item",), quick=True)
        entries = [value for prefix, value in values if prefix == "shapes.item"]
    assert len(entries) == len(base()["shapes"])
    for entry, raw in zip(entries, base()["shapes"]):
        assert isinstance(entry, Entry) and entry.value == raw
        piece = data[entry.offset:entry.offset + entry.size]
        assert json.loads(piece) == raw and xxhash.xxh3_128_digest(piece) == entry.digest


def test_points_come_as_float64(tmp_path):
    memo = learnt(tmp_path, base())
    again = read(write(tmp_path / "again.json", base()), tmp_path / "again", memo)
    assert all(s.points.dtype == np.float64 for i in range(3) for s in again.shapes_of(i))


def test_an_image_made_taller_has_its_edge_rows_counted_anew(tmp_path, monkeypatch):
    """A polygon past the border crosses only the rows of its image: the memo's count holds
    for the height it was made for, not for a taller image."""
    manifest = base()
    manifest["shapes"][0]["points"] = [0, 0, 63, 0, 63, 200, 0, 200]  # 200 rows, 32 in the image
    memo = learnt(tmp_path, manifest)
    taller(manifest)
    path = write(tmp_path / "taller.json", manifest)
    monkeypatch.setattr(M, "MAX_EDGE_ROWS", 150)
    without = read(path, tmp_path / "without")
    assert isinstance(without, list) and "more than 150 rows" in without[0]
    assert read(path, tmp_path / "with", memo) == without


def test_no_memo_is_kept_past_its_size(tmp_path, monkeypatch):
    monkeypatch.setattr(M, "MEMO_MAX_SHAPES", 5)
    monkeypatch.setattr(M, "_SHAPE_GROUP", 2)
    manifest = read(write(tmp_path / "m.json", base()), tmp_path / "m", learn=True)
    assert manifest.memo is None and manifest.shape_count == 7
    monkeypatch.setattr(M, "MEMO_MAX_SHAPES", 6)
    assert len(read(write(tmp_path / "n.json", base()), tmp_path / "n", learn=True).memo) == 6
