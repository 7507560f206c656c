"""Hostile export input, through the command line: values of the wrong type or range deep in
well-formed files, malformed UTF-8, deep nesting, huge polygons and names, unbounded data, and
legal files that must not be refused. Each bad one gets exit 2 and one line naming the place;
then a property-based test mutates valid files and holds load_annotations to the same promise."""

import copy
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import image, manifest, shape
from tests.worker.test_hostile_inputs import check, run_case
from worker.cityscapes.adapters import load_annotations
from worker.errors import ClientError


def doc(value) -> bytes:
    """JSON as bytes; lone surrogates kept as escapes (json.dumps writes them so)."""
    return json.dumps(value).encode()


def mask(rle, **more):
    return doc(manifest(shapes=[shape(type="mask", points=[], rle=rle, **more)]))


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def raw_manifest(name: bytes) -> bytes:
    """A manifest whose image name is the raw bytes given (no encoder in between)."""
    return (b'{"version": 1, "labels": [], "images": [{"id": 1, "name": "' + name
            + b'", "width": 64, "height": 32}], "shapes": []}')


def coco(images=None, annotations=None, categories=None) -> bytes:
    return doc({
        "images": images or [{"id": 1, "file_name": "a.png", "width": 64, "height": 32}],
        "annotations": annotations or [annotation()],
        "categories": categories or [{"id": 1, "name": "car"}],
    })


def annotation(**more):
    value = {"id": 7, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 20, 1, 10, 9]]}
    value.update(more)
    return value


CVAT = ('<annotations><version>1.1</version><image id="{id}" name="{name}" width="{width}"'
        ' height="32">{shapes}</image></annotations>')
POLYGON = '<polygon label="car" points="1,1;20,1;10,9" z_order="{z}">{attributes}</polygon>'


def cvat(shapes=None, id="0", name="a.png", width="64", z="0", attributes="") -> str:
    shapes = POLYGON.format(z=z, attributes=attributes) if shapes is None else shapes
    return CVAT.format(id=id, name=name, width=width, shapes=shapes)


def zigzag(vertices: int) -> list[int]:
    """A polygon each of whose edges spans the 32 rows of the image."""
    return [v for i in range(vertices) for v in (i % 64, 0 if i % 2 else 32)]


BIG = 2**70
# (annotations bytes, text the single error line must hold)
REFUSED = {
    # 1. wrong types and ranges deep inside well-formed files
    "rle size null": (mask({"size": [None, 64], "counts": [2048]}), "mask size [None, 64]"),
    "rle counts 1e20": (mask({"size": [32, 64], "counts": [0, 1e20]}), "RLE counts are neither"),
    "rle runs wrap int64": (mask({"size": [32, 64], "counts": [2**63 - 1, 2**63 - 1, 2050]}),
                            "RLE runs lie outside 0 to 2048"),
    "rle 100-bit run": (mask({"size": [32, 64], "counts": "o" * 19 + "0"}),
                        "RLE string holds a number of 20 characters"),
    "rle foreign characters": (mask({"size": [32, 64], "counts": "0\u4e00"}), "outside '0' to 'o'"),
    "image id a list": (doc(manifest(images=[image(id=[1])])), "images[0] ('lindau/a.png'): id"),
    "width as text": (doc(manifest(images=[image(width="64")])), "images[0] ('lindau/a.png'): width"),
    "width true": (doc(manifest(images=[image(width=True)])), "images[0] ('lindau/a.png'): width"),
    "z_order past 64 bits": (doc(manifest(shapes=[shape(z_order=BIG)])), "integer overflow"),
    "points as text": (doc(manifest(shapes=[shape(points=["1", 1, 20, 1, 10, 9])])),
                       "shapes[0] (image 1): points.0"),
    "is_crowd neither": (doc(manifest(shapes=[shape(attributes={"is_crowd": "maybe"})])),
                         "is_crowd 'maybe' is not true or false"),
    "COCO category id an object": (coco(categories=[{"id": {"a": 1}, "name": "car"}]),
                                   "categories[0]: needs an id"),
    "COCO image id a list": (coco(images=[{"id": [1], "file_name": "a.png", "width": 64,
                                           "height": 32}]), "images[0]: needs an id"),
    "COCO width as text": (coco(images=[{"id": 1, "file_name": "a.png", "width": "64",
                                         "height": 32}]), "images[0] ('a.png'): width and height"),
    "COCO image_id a list": (coco(annotations=[annotation(image_id=[1])]),
                             "annotation 7: image_id [1] is not in images"),
    "COCO bbox of text": (coco(annotations=[annotation(segmentation=[], bbox=["1", 2, 3, 4])]),
                          "annotation 7 (image 'a.png'): has neither a segmentation nor a bbox"),
    "COCO iscrowd 2": (coco(annotations=[annotation(iscrowd=2)]),
                       "annotation 7 (image 'a.png'): is_crowd 2 is not true or false"),
    "COCO rle counts 1e20": (coco(annotations=[annotation(segmentation={
        "size": [32, 64], "counts": [0, 1e20]})]), "annotation 7 (image 'a.png'): RLE counts"),
    "COCO rle 100-bit run": (coco(annotations=[annotation(segmentation={
        "size": [32, 64], "counts": "o" * 19 + "0"})]), "annotation 7 (image 'a.png'): RLE string"),
    "CVAT image id past 64 bits": (cvat(id=str(BIG)).encode(), "image 'a.png': id="),
    "CVAT width past 64 bits": (cvat(width=str(10**20)).encode(),
                                "image 'a.png': width and height must be positive integers"),
    "CVAT z_order past 64 bits": (cvat(z=str(BIG)).encode(),
                                  "image 'a.png', shape 0 (<polygon>): z_order="),
    "CVAT mask runs past 64 bits": (cvat(shapes=(
        f'<mask label="car" left="0" top="0" width="2" height="2" rle="{BIG},{4 - BIG}"/>')
    ).encode(), "shape 0 (<mask>): needs integer left, top"),
    "CVAT is_crowd neither": (cvat(attributes='<attribute name="is_crowd">maybe</attribute>')
                              .encode(), "shape 0 (<polygon>): is_crowd 'maybe'"),
    # 2. malformed UTF-8 and lone surrogates
    "overlong UTF-8 in a name": (raw_manifest(b"\xc0\xafa.png"), "top level: holds malformed UTF-8"),
    "CESU-8 surrogates in a name": (raw_manifest(b"\xed\xa0\xbd\xed\xb8\x80.png"),
                                    "holds malformed UTF-8"),
    "lone surrogate escape": (raw_manifest(b"\\ud800.png"), "holds a lone UTF-16 surrogate"),
    "lone low surrogate escape": (raw_manifest(b"a\\udc00.png"), "holds a lone UTF-16 surrogate"),
    "COCO overlong UTF-8": (coco().replace(b"a.png", b"\xc0\xaf.png"), "holds malformed UTF-8"),
    "CVAT overlong UTF-8": (cvat().encode().replace(b"a.png", b"\xc0\xaf.png"),
                            "is not valid XML (not well-formed (invalid token): line 1"),
    "CVAT CESU-8": (cvat().encode().replace(b"a.png", b"\xed\xa0\x80.png"), "is not valid XML"),
    # 3. nesting
    "nested 1,500 deep": (doc(manifest(shapes=[shape(attributes={"x": "DEEP"})])).replace(
        b'"DEEP"', nested(1500).encode()), "shapes[0]: is nested more than 64 levels deep"),
    "nested 50,000 deep": (b'{"version": 1, "x": ' + nested(50_000).encode() + b"}",
                           "x[0]: is nested more than 64 levels deep"),
    "COCO nested 1,500 deep": (coco().replace(b'"segmentation": ', b'"x": '
                                              + nested(1500).encode() + b', "segmentation": '),
                               "annotations[0]: is nested more than 64 levels deep"),
    "CVAT nested 100 deep": (cvat(attributes="<a>" * 100 + "</a>" * 100).encode(),
                             "<image name='a.png'>: elements are nested more than 64 levels"),
    # 4. huge polygons and crowded images
    "polygon of 500,001 vertices": (doc(manifest(shapes=[shape(points=[1, 2] * 500_001)])),
                                    "polygon has 500,001 vertices, more than 500,000"),
    "polygon of 5,000,000 vertices": (doc(manifest(shapes=[shape(points=[1, 2] * 5_000_000)])),
                                      "shapes[0]: holds more than 1,010,000 values"),
    "edges crossing 10,000,000 rows": (doc(manifest(shapes=[shape(points=zigzag(320_000))])),
                                       "edges cross more than 10,000,000 rows"),
    "100,001 shapes in one image": (doc(manifest(shapes=[shape(type="rectangle",
                                                               points=[1, 1, 2, 2])] * 100_001)),
                                    "shapes[100000] (image 'lindau/a.png'): the image has more"),
    "COCO polygon of 500,001 vertices": (coco(annotations=[annotation(
        segmentation=[[1, 2] * 500_001])]), "a polygon has 500,001 vertices"),
    "CVAT polygon of 500,001 vertices": (cvat(shapes='<polygon label="car" points="{}"/>'.format(
        ";".join(["1,2"] * 500_001))).encode(), "polygon has 500,001 vertices, more than 500,000"),
    "CVAT points of 40 MB": (cvat(shapes='<polygon label="car" points="{}"/>'.format(
        "1.5,2.5;" * 5_000_000)).encode(), "holds a tag or text of more than 32 MiB"),
    # 5. names
    "name of 70,000 bytes": (doc(manifest(images=[image(name="a" * 70_000 + ".png")])),
                             "is 70,004 bytes long, more than 1,024"),
    "name part of 300 bytes": (doc(manifest(images=[image(name="city/" + "b" * 300 + ".png")])),
                               "has a part of 304 bytes, more than 255"),
    "label of 5,000 bytes": (doc(manifest(shapes=[shape(label="x" * 5000)])),
                             "label 'xxxx"),
    # 6. unbounded data
    "40 MB of NUL bytes": (b"\0" * (40 << 20), "is not valid JSON"),
    "a 40 MB string": (b'{"version": 1, "x": "' + b"a" * (40 << 20) + b'"}',
                       "holds a single value (or blank stretch) of more than 32 MiB"),
    "40 MB of blanks": (b"{" + b" " * (40 << 20) + b"}", "of more than 32 MiB"),
}

LEGAL_CVAT = cvat(shapes='<polygon label="car" points="1,1;20,1;10,9"/>'
                  '<polygon label="caf\u00e9 \u8eca" points="30,1;40,1;35,9"/>')
# 7. legal input in the encodings XML allows (and one a JSON escape allows)
ACCEPTED = {
    "CVAT in UTF-16 with a BOM": LEGAL_CVAT.encode("utf-16"),
    "CVAT in UTF-16 big-endian with a BOM": b"\xfe\xff" + LEGAL_CVAT.encode("utf-16-be"),
    "CVAT in UTF-16 declared, no BOM": ('<?xml version="1.0" encoding="UTF-16"?>'
                                        + LEGAL_CVAT).encode("utf-16-le"),
    "CVAT in UTF-32 with a BOM": LEGAL_CVAT.encode("utf-32"),
    "CVAT in UTF-8 with a BOM": LEGAL_CVAT.encode("utf-8-sig"),
    "CVAT in Shift_JIS declared": ('<?xml version="1.0" encoding="Shift_JIS"?>'
                                   + LEGAL_CVAT.replace("caf\u00e9 ", "")).encode("shift_jis"),
    "CVAT in windows-1252 declared": ('<?xml version="1.0" encoding="windows-1252"?>'
                                      + LEGAL_CVAT.replace(" \u8eca", "")).encode("cp1252"),
    "surrogate pair escape in a name": raw_manifest(b"a\\ud83d\\ude00.png"),
    "COCO iscrowd as text": coco(annotations=[annotation(iscrowd="0")]),
    "polygon of 500,000 vertices": doc(manifest(shapes=[shape(points=[1, 2, 30, 2, 15, 20]
                                                              + [15, 20] * 499_997)])),
}


@pytest.mark.parametrize("case", REFUSED)
def test_hostile_export_input_is_refused_in_one_line(case, tmp_path):
    data, message = REFUSED[case]
    check(*run_case(tmp_path, "export", "--annotations", data, "o.zip"), 2, message)


@pytest.mark.parametrize("case", ACCEPTED)
def test_legal_export_input_is_accepted(case, tmp_path):
    run, out_dir, output = run_case(tmp_path, "export", "--annotations", ACCEPTED[case], "o.zip")
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr and output.exists()
    assert ": 1 images," in run.stdout


def test_coco_iscrowd_text_is_read_as_its_meaning(tmp_path):
    """'0' is not a crowd (bool('0') would say it is); '1' is."""
    for text, crowd in (("0", False), ("false", False), ("1", True), ("true", True)):
        path = tmp_path / f"{text}.json"
        path.write_bytes(coco(annotations=[annotation(iscrowd=text)]))
        work = tmp_path / f"work-{text}"
        work.mkdir()
        loaded = load_annotations(path, work)
        assert [s.is_crowd for s in loaded.shapes_of(0)] == [crowd]
        loaded.store.close()


# Property-based: mutations of valid files keep the promise in process ------------------------

HOSTILE_VALUES = [None, True, False, 0, -1, 2**31, 2**64, -(2**70), 1e20, -1e308, 0.5, "", "0",
                  "true", "\ud800", "x" * 300, "a/../b", [], {}, [[[]]], {"size": [1, 1]},
                  [None, "x"], "DEEP"]


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _mutate(data, value):
    """Up to three changes anywhere in the tree: a value swapped for a hostile one, or a key or
    item deleted."""
    value = copy.deepcopy(value)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from([p for p in _paths(value) if p]))
        parent = value
        for step in path[:-1]:
            parent = parent[step]
        if data.draw(st.booleans()):
            parent[path[-1]] = copy.deepcopy(data.draw(st.sampled_from(HOSTILE_VALUES)))
        else:
            del parent[path[-1]]
    return value


def _bytes_of(data, value) -> bytes:
    raw = json.dumps(value).encode().replace(b'"DEEP"', nested(data.draw(
        st.sampled_from([10, 70, 2000]))).encode())
    return _flip(data, raw)


def _flip(data, raw: bytes) -> bytes:
    for _ in range(data.draw(st.integers(0, 2))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([data.draw(st.integers(0, 255))]) + raw[at + 1:]
    if data.draw(st.integers(0, 9)) == 0:
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    return raw


def _keeps_the_promise(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path, work = Path(folder, "annotations"), Path(folder, "work")
        path.write_bytes(raw)
        work.mkdir()
        try:
            loaded = load_annotations(path, work)
        except ClientError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 2000
            return
        for index in range(len(loaded.images)):
            loaded.shapes_of(index)
        loaded.store.close()


VALID_MANIFEST = manifest(
    images=[image(), image(id="b", name="lindau/b.png", subset="val")],
    shapes=[shape(), shape(type="rectangle", points=[1, 1, 5, 5], z_order=2),
            shape(type="mask", points=[], rle={"size": [32, 64], "counts": "0`1"}),
            shape(image="b", attributes={"is_crowd": True}, instance=3)],
)
VALID_COCO = json.loads(coco(
    images=[{"id": 1, "file_name": "a.png", "width": 64, "height": 32},
            {"id": 2, "file_name": "b.png", "width": 64, "height": 32}],
    annotations=[annotation(), annotation(id=8, image_id=2, segmentation=[], bbox=[1, 1, 4, 4]),
                 annotation(id=9, iscrowd=1, segmentation={"size": [32, 64], "counts": [5, 10, 2033]})],
    categories=[{"id": 1, "name": "car"}, {"id": 2, "name": "road"}],
))
CVAT_VALUES = ["0", "-1", "1e3", str(BIG), "nan", "", "x", "1,1;2,2", "1,1;x,2;5,5",
               "\u00e9", "&amp;", "1" * 30, "0,0;" * 50 + "1,1"]
CVAT_DOC = ('<annotations><version>1.1</version><meta><task><labels><label><name>car</name>'
            '<color>{color}</color></label></labels></task></meta>'
            '<image id="{id}" name="{name}" width="{width}" height="{height}">'
            '<polygon label="{label}" points="{points}" z_order="{z}" group_id="{group}">'
            '<attribute name="is_crowd">{crowd}</attribute></polygon>'
            '<box label="car" xtl="{x}" ytl="1" xbr="5" ybr="5" rotation="{angle}"/>'
            '<mask label="car" left="{left}" top="0" width="2" height="2" rle="{rle}"/>'
            "</image></annotations>")
CVAT_FIELDS = {"color": "#ff0000", "id": "0", "name": "a.png", "width": "64", "height": "32",
               "label": "car", "points": "1,1;20,1;10,9", "z": "0", "group": "0",
               "crowd": "false", "x": "1", "angle": "0", "left": "0", "rle": "1,2,1"}

EXAMPLES = settings(max_examples=200, derandomize=True, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@EXAMPLES
@given(data=st.data())
def test_mutated_manifests_load_or_fail_as_client_errors(data):
    _keeps_the_promise(_bytes_of(data, _mutate(data, VALID_MANIFEST)))


@EXAMPLES
@given(data=st.data())
def test_mutated_coco_files_load_or_fail_as_client_errors(data):
    _keeps_the_promise(_bytes_of(data, _mutate(data, VALID_COCO)))


@EXAMPLES
@given(data=st.data())
def test_mutated_cvat_files_load_or_fail_as_client_errors(data):
    fields = dict(CVAT_FIELDS)
    for key in data.draw(st.lists(st.sampled_from(sorted(fields)), max_size=3)):
        fields[key] = data.draw(st.sampled_from(CVAT_VALUES))
    text = CVAT_DOC.format(**fields)
    if data.draw(st.integers(0, 4)) == 0:
        text = text.replace("<attribute", "<a>" * 70 + "<attribute").replace(
            "</polygon>", "</a>" * 70 + "</polygon>")
    encoding = data.draw(st.sampled_from(["utf-8", "utf-16", "utf-32"]))
    _keeps_the_promise(_flip(data, text.encode(encoding)))
