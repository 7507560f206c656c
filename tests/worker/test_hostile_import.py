"""Hostile and awkward Cityscapes zips through the command line: zips built byte by byte (not by
zipfile or our writer, whose assumptions they test), broken PNGs, label files and polygons.json.
Each gets exit 2 and one line naming the member, or a documented warning, within seconds."""

import io
import json
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.factories import image, manifest, shape
from tests.worker.test_hostile_inputs import GOOD_PNG, MEMBER, archive, check, cli, png_of, run_case
from worker.cityscapes.labels import LabelMap
from worker.cityscapes.manifest import read_manifest
from worker.cityscapes.png import encode_png
from worker.export_local import run_export
from worker.import_local import run_import
from worker.specs import parse_export_spec, parse_import_spec


def raw_zip(*entries: dict) -> bytes:
    """A zip written field by field. Entry keys: name (bytes), data, and what to falsify:
    payload (the stored bytes), method, flags, local_flags, local_name, crc."""
    out, central = b"", b""
    for e in entries:
        data, name = e["data"], e["name"]
        payload = e.get("payload", data)
        method, flags = e.get("method", 0), e.get("flags", 0)
        crc = e.get("crc", zlib.crc32(data))
        local_name = e.get("local_name", name)
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, e.get("local_flags", flags), method,
                           0, 0x21, crc, len(payload), len(data), len(local_name), 0)
        out += local_name + payload
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, flags, method, 0, 0x21,
                               crc, len(payload), len(data), len(name), 0, 0, 0, 0, 0, offset)
        central += name
    count = len(entries)
    return out + central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count,
                                       len(central), len(out), 0)


def deflated(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush()


NAME = MEMBER.encode()
LABELS = "gtFine/lindau/a_gtFine_labelIds.png"
COLOR = "gtFine/lindau/a_gtFine_color.png"
POLYGONS = "gtFine/lindau/a_gtFine_polygons.json"


def with_chunk(png: bytes, kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    """The PNG with a chunk inserted after IHDR (33 bytes in)."""
    crc = zlib.crc32(body, zlib.crc32(kind)) if crc is None else crc
    return png[:33] + struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc) + png[33:]


def polygons(objects, width=64, height=32) -> bytes:
    return json.dumps({"imgWidth": width, "imgHeight": height, "objects": objects}).encode()


CAR = [{"label": "car", "polygon": [[1, 1], [20, 1], [10, 9]]}]
LABEL_IDS = encode_png(np.where(np.arange(64)[None, :] < 9, 26, 7).repeat(32, 0).astype(np.uint8))
COLOR_PNG = encode_png(np.zeros((32, 64, 3), np.uint8))
FAR_PAIRS = np.zeros((1024, 2048), np.uint16)  # 10,000 instances of two pixels far apart
for _i, _v in enumerate(c * 1000 + k for c in range(24, 34) for k in range(1000)):
    FAR_PAIRS[2 * (_i // 500), 4 * (_i % 500)] = FAR_PAIRS[1023 - 2 * (_i // 500), 2047 - 4 * (_i % 500)] = _v
UNKNOWN_VALUES = np.zeros((400, 500), np.uint16)
UNKNOWN_VALUES.reshape(-1)[: 62000 : 2] = np.arange(34000, 65000)  # 31,000 values of no class

# (zip bytes, exit code, text the single line must hold)
CASES = {
    # 1. members that zipfile cannot read
    "bad CRC": (raw_zip({"name": NAME, "data": GOOD_PNG, "crc": zlib.crc32(GOOD_PNG) ^ 1}), 2,
                f"member {MEMBER!r} is damaged (CRC check failed)"),
    "garbage deflate": (raw_zip({"name": NAME, "data": GOOD_PNG, "method": 8, "payload": b"\xff" * 64}),
                        2, f"member {MEMBER!r} is damaged (invalid deflate data)"),
    "deflate cut short": (raw_zip({"name": NAME, "data": GOOD_PNG, "method": 8,
                                   "payload": deflated(GOOD_PNG)[:40]}), 2, f"member {MEMBER!r} is damaged"),
    "encrypted": (raw_zip({"name": NAME, "data": GOOD_PNG, "flags": 1}), 2, f"member {MEMBER!r} is encrypted"),
    "Deflate64": (raw_zip({"name": NAME, "data": GOOD_PNG, "method": 9}), 2,
                  f"member {MEMBER!r}: compression method 9 (Deflate64)"),
    "bzip2": (raw_zip({"name": NAME, "data": GOOD_PNG, "method": 12}), 2, "method 12 (bzip2)"),
    "LZMA": (raw_zip({"name": NAME, "data": GOOD_PNG, "method": 14}), 2, "method 14 (LZMA)"),
    "unknown method": (raw_zip({"name": NAME, "data": GOOD_PNG, "method": 77}), 2, "method 77 (unknown)"),
    "local header names another file": (
        raw_zip({"name": NAME, "data": GOOD_PNG, "local_name": b"gtFine/lindau/b_gtFine_instanceIds.png"}),
        2, f"member {MEMBER!r} is damaged (its local header names another file"),
    "local name not UTF-8": (raw_zip({"name": NAME, "data": GOOD_PNG, "local_flags": 0x800,
                                      "local_name": NAME[:-5] + b"\xff.png"}), 2, "local header name is not UTF-8"),
    # 2. one name twice
    "member twice": (raw_zip({"name": NAME, "data": GOOD_PNG}, {"name": NAME, "data": GOOD_PNG[:60]}), 2,
                     f"member {MEMBER!r} is in the archive 2 times"),
    # 3. broken PNGs
    "truncated instanceIds": (archive({MEMBER: GOOD_PNG[:-20]}), 2, f"member {MEMBER!r}: not a readable PNG"),
    "truncated labelIds": (archive({LABELS: LABEL_IDS[:-16]}), 2, f"member {LABELS!r}: not a readable PNG"),
    "truncated color": (archive({COLOR: COLOR_PNG[:-16]}), 2, f"member {COLOR!r}: not a readable PNG"),
    "chunk with a bad CRC": (archive({MEMBER: with_chunk(GOOD_PNG, b"tEXt", b"a\0b", crc=1)}), 2,
                             f"member {MEMBER!r}: not a readable PNG"),
    "IEND missing": (archive({MEMBER: GOOD_PNG[:-12]}), 2, f"member {MEMBER!r}: not a readable PNG (truncated"),
    # a text chunk whose text does not inflate: libpng warns "zTXt: ..." on stderr; the pixels are
    # whole, so it is read, and nothing reaches the terminal
    "broken zTXt chunk": (archive({MEMBER: with_chunk(GOOD_PNG, b"zTXt", b"k\0\0garbage")}), 0, None),
    # 4. sizes: made fast, or refused early
    "31,000 unknown values": (archive({MEMBER: encode_png(UNKNOWN_VALUES)}, zipfile.ZIP_DEFLATED), 0,
                              "31000 pixel values: 34000 (class id 34, 1 pixels)"),
    "10,000 far-apart instances": (archive({MEMBER: encode_png(FAR_PAIRS)}, zipfile.ZIP_DEFLATED), 0,
                                   None),
    "polygons.json too large": (archive({POLYGONS: polygons(CAR) + b" " * (17 << 20)}), 2,
                                f"member {POLYGONS!r} is 17825"),
    "too many vertices": (archive({POLYGONS: polygons([{"label": "car", "polygon": [[1, 1]] * 1_000_001}])}), 2, "more than 1,000,000 vertices"),
    "ids image wider than 32768": (archive({MEMBER: png_of(Image.new("L", (40000, 2)))}), 2,
                                   f"member {MEMBER!r}: image of 40000x2"),
    "ids image over the pixel limit": (archive({MEMBER: png_of(Image.new("L", (16385, 16385)))},
                                               zipfile.ZIP_DEFLATED), 2, "more than 268,435,456 pixels"),
    # 7. label_color.txt
    "superscript digit in label_color": (archive({"label_color.txt": "0 0 0 bg\n\u00b2 0 0 car\n".encode(),
                                                  MEMBER: GOOD_PNG}), 2, "label_color.txt line 2"),
    "NEL in a label name": (archive({"label_color.txt": "0 0 0 bg\n0 0 142 ca\u0085r\n".encode(),
                                     MEMBER: GOOD_PNG}), 2, "label_color.txt line 2: label name"),
    "U+2028 in a label name": (archive({"label_color.txt": "0 0 0 bg\n0 0 142 ca\u2028r\n".encode(),
                                        MEMBER: GOOD_PNG}), 2, "label_color.txt line 2: label name"),
    "label_color not UTF-8": (archive({"label_color.txt": b"0 0 0 bg\n0 0 142 \xffcar\n", MEMBER: GOOD_PNG}),
                              2, "label_color.txt line 2: not UTF-8"),
    # 8. what the manifest would refuse
    "infinite vertex": (archive({POLYGONS: polygons([]).replace(b'"objects": []',
                                                                 b'"objects": [{"label": "car", "polygon": [[1e999, 1], [2, 2], [3, 1]]}]')}),
                        2, f"member {POLYGONS!r}: not a Cityscapes polygons file"),
    "negative imgHeight": (archive({POLYGONS: polygons(CAR, height=-5)}), 2, f"member {POLYGONS!r}: image of 64x-5"),
    "imgWidth not a number": (archive({POLYGONS: polygons(CAR, width="wide")}), 2, f"member {POLYGONS!r}"),
    "vertex beyond 2^30": (archive({POLYGONS: polygons([{"label": "car", "polygon": [[1e12, 1], [2, 2], [3, 1]]}])}),
                           0, "object 0 ('car'): polygon is not a list of [x, y] numbers"),
    "vertex as text": (archive({POLYGONS: polygons([{"label": "car", "polygon": [["1", 1], [2, 2], [3, 1]]}])}),
                       0, "skipped"),
    "object not an object": (archive({POLYGONS: polygons([7, *CAR])}), 0, "object 0 is not an object"),
    "dot folder": (archive({"gtFine/train/./a_gtFine_instanceIds.png": GOOD_PNG}), 2,
                   "'.' or '..' path part"),
    "newline in a folder": (archive({"gtFine/lin\ndau/a_gtFine_instanceIds.png": GOOD_PNG}), 2,
                            "member 'gtFine/lin\\ndau/a_gtFine_instanceIds.png'"),
    "empty item name": (archive({"gtFine/lindau/_gtFine_instanceIds.png": GOOD_PNG}), 2,
                        "member 'gtFine/lindau/_gtFine_instanceIds.png'"),
}
# Names the central directory cannot decode fail in zipfile.ZipFile() itself, inside
# worker.import_local.open_archive (not this area's file): it catches BadZipFile only.
OPEN_CASES = {
    "central name not UTF-8": (raw_zip({"name": NAME[:-5] + b"\xff.png", "data": GOOD_PNG, "flags": 0x800}),
                               2, "not UTF-8"),
    "lone surrogate in a name": (raw_zip({"name": b"gtFine/a/\xed\xa0\x80_gtFine_instanceIds.png",
                                          "data": GOOD_PNG, "flags": 0x800}), 2, "not UTF-8"),
}


def check_output(out_dir):
    """A written import is one the export reads back."""
    for path in out_dir.iterdir():
        read_manifest(path, out_dir.parent)


@pytest.mark.parametrize("case", CASES)
def test_hostile_import(case, tmp_path):
    data, code, message = CASES[case]
    run, out_dir, output = run_case(tmp_path, "import", "--archive", data, "o.json")
    if message is None:  # read as it is: no line on stderr at all
        assert run.returncode == 0 and run.stderr == "" and output.exists(), run.stderr
    else:
        check(run, out_dir, output, code, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input", "out"]
    if code == 0:
        check_output(out_dir)


@pytest.mark.parametrize("case", OPEN_CASES)
def test_undecodable_central_names(case, tmp_path):
    data, code, message = OPEN_CASES[case]
    check(*run_case(tmp_path, "import", "--archive", data, "o.json"), code, message)


PREVIEW_CASES = {k: CASES[k] for k in ("bad CRC", "Deflate64", "truncated instanceIds", "member twice",
                                       "ids image over the pixel limit", "broken zTXt chunk")}


@pytest.mark.parametrize("case", PREVIEW_CASES)
def test_hostile_preview(case, tmp_path):
    data, code, message = PREVIEW_CASES[case]
    source = tmp_path / "input.zip"
    source.write_bytes(data)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    run = cli("preview", source, "--output", out_dir / "p.png")
    if message is None:
        assert run.returncode == 0 and run.stderr == "" and (out_dir / "p.png").exists(), run.stderr
    else:
        check(run, out_dir, out_dir / "p.png", code, message)


def test_large_preview_is_scaled_down(tmp_path):
    ids = np.zeros((100, 5000), np.uint16)
    ids[10:90, 100:4000] = 26001
    source = tmp_path / "a.zip"
    source.write_bytes(archive({MEMBER: encode_png(ids)}, zipfile.ZIP_DEFLATED))
    run = cli("preview", source, "--output", tmp_path / "p.png")
    assert run.returncode == 0, run.stderr
    picture = Image.open(tmp_path / "p.png")
    assert 1667 <= picture.size[0] < 1667 + 400 and picture.size[1] >= 34  # 5000 / 3, plus legend


def test_labelids_at_16000_squared_is_read():
    """The pixel limit of the export holds for import: 16000x16000 is not refused."""
    from worker.cityscapes.reader import decode_ids_png
    pixels = decode_ids_png(png_of(Image.new("L", (16000, 16000))), LABELS)
    assert pixels.shape == (16000, 16000)


def test_void_background_line_keeps_ids(tmp_path):
    """label_color.txt line order is the id: a first line 'void' is id 0, nothing shifts."""
    text = b"# r g b label_name\r\n0 0 0 void\r\n128 64 128 road\r\n0 0 142 car\r\n"
    source = tmp_path / "a.zip"
    source.write_bytes(archive({"label_color.txt": text, LABELS: LABEL_IDS}))
    run = cli("import", "--archive", source, "--output", tmp_path / "o.json")
    assert run.returncode == 0, run.stderr
    result = json.loads((tmp_path / "o.json").read_text())
    assert [label["name"] for label in result["labels"]] == ["void", "road", "car"]
    # LABEL_IDS holds ids 26 and 7, neither in this 3-line map: all read as background
    assert result["shapes"] == [] and "26 (class id 26" in run.stderr
    ids = LabelMap.from_label_color_txt([("void", (0, 0, 0)), ("road", (1, 1, 1)), ("car", (2, 2, 2))])
    assert [(label.name, label.id) for label in ids.labels] == [("void", 0), ("road", 1), ("car", 2)]


def test_export_refuses_a_label_name_with_a_line_break(tmp_path):
    for name in ("ca\u0085r", "ca\u2028r", "ca\u2029r", "ca\x1cr"):
        source = tmp_path / "m.json"
        source.write_text(json.dumps(manifest(labels=[{"name": name, "color": "#000001"}],
                                              shapes=[shape(label=name)])))
        run = cli("export", "--annotations", source, "--output", tmp_path / "o.zip")
        assert run.returncode == 2 and "control characters" in run.stderr, run.stderr
        assert not (tmp_path / "o.zip").exists()


def test_awkward_label_names_round_trip(tmp_path):
    names = ["traffic cone", "Straße", "car #2", "日本 車", "x-y_z"]
    labels = [{"name": n, "color": f"#0000{i + 1:02x}"} for i, n in enumerate(names)]
    shapes = [shape(label=n, points=[1 + 10 * i, 1, 8 + 10 * i, 1, 4 + 10 * i, 9]) for i, n in enumerate(names)]
    source = tmp_path / "m.json"
    source.write_text(json.dumps(manifest(labels=labels, shapes=shapes, images=[image()])))
    run_export(parse_export_spec({"annotations": str(source), "output": str(tmp_path / "a.zip")}), jobs=1)
    run_import(parse_import_spec({"archive": str(tmp_path / "a.zip"), "output": str(tmp_path / "b.json")}), jobs=1)
    back = json.loads((tmp_path / "b.json").read_text())
    assert [label["name"] for label in back["labels"]] == ["background", *names]
    assert [label["color"] for label in back["labels"][1:]] == [label["color"] for label in labels]
    assert sorted({s["label"] for s in back["shapes"]} - {"background"}) == sorted(names)
    read_manifest(tmp_path / "b.json", tmp_path)



def test_a_void_background_survives_import_and_export_again(tmp_path):
    """A zip whose id 0 is named 'void' (as some datasets name it): imported, then exported, its
    label_color.txt and labelIds come back the same, not shifted by an added 'background'."""
    text = b"0 0 0 void\n0 128 0 tree\n200 100 50 cat\n"  # not the Cityscapes table
    ids = np.zeros((32, 64), np.uint8)
    ids[20:, :] = 1
    ids[2:10, 5:25] = 2
    ids[3:8, 40:50] = 2
    source = tmp_path / "a.zip"
    source.write_bytes(archive({"label_color.txt": text,
                                "gtFine/default/lindau/a_gtFine_labelIds.png": encode_png(ids)}))
    run = cli("import", "--archive", source, "--output", tmp_path / "m.json")
    assert run.returncode == 0, run.stderr
    run = cli("export", "--annotations", tmp_path / "m.json", "--output", tmp_path / "b.zip")
    assert run.returncode == 0, run.stderr
    again = zipfile.ZipFile(tmp_path / "b.zip")
    written = [line for line in again.read("label_color.txt").split(b"\n") if not line.startswith(b"#")]
    assert written == text.split(b"\n")
    back = np.asarray(Image.open(io.BytesIO(again.read("gtFine/default/lindau/a_gtFine_labelIds.png"))))
    assert np.array_equal(back, ids)
