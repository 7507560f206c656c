import subprocess
import zipfile

import pytest

from worker.cityscapes.archive import (
    ArchiveWriter,
    central_directory,
    encode_entries,
    rebase,
)
from worker.cityscapes.export import ZipPart

PARTS = [
    ZipPart("label_color.txt", b"0 0 0 background\n", compress=True),
    ZipPart("gtFine/train/x/a_gtFine_labelIds.png", b"\x89PNG" + bytes(range(256)) * 10),
    ZipPart("gtFine/train/x/ä_gtFine_polygons.json", b'{"objects": []}' * 50, compress=True),
]


def unzip_tests_clean(path, entries: int) -> None:
    """Info-ZIP's `unzip -t` (Debian's unzip, a reader that is not Python's) checks every entry."""
    done = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert f"No errors detected in compressed data of {path}" in done.stdout
    assert done.stdout.count("  OK") == entries


def check(path, parts):
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == [p.path for p in parts]
        for part in parts:
            assert archive.read(part.path) == part.data


def test_local_archive_reads_back_with_zipfile_and_info_zip_unzip(tmp_path):
    out = tmp_path / "o.zip"
    with ArchiveWriter(out) as writer:
        writer.add(PARTS[:1])
        writer.add(PARTS[1:])
        writer.commit()
    check(out, PARTS)
    unzip_tests_clean(out, len(PARTS))
    assert [p.name for p in tmp_path.iterdir()] == ["o.zip"]


def test_runs_written_apart_join_into_one_archive(tmp_path):
    first, first_records = encode_entries(PARTS[:2])
    second, second_records = encode_entries(PARTS[2:])
    records = first_records + rebase(second_records, len(first))
    joined = first + second
    (tmp_path / "j.zip").write_bytes(joined + central_directory(records, len(joined)))
    check(tmp_path / "j.zip", PARTS)
    whole, _ = encode_entries(PARTS)
    assert whole == joined


def test_zip64_when_entries_exceed_the_classic_limits(tmp_path):
    parts = [ZipPart(f"f{i}.txt", str(i).encode()) for i in range(70000)]
    blob, records = encode_entries(parts)
    (tmp_path / "big.zip").write_bytes(blob + central_directory(records, len(blob)))
    with zipfile.ZipFile(tmp_path / "big.zip") as archive:
        assert len(archive.namelist()) == 70000
        assert archive.read("f69999.txt") == b"69999"
    unzip_tests_clean(tmp_path / "big.zip", 70000)


def test_offsets_past_4_gib_use_zip64_extra_fields():
    blob, records = encode_entries(PARTS)
    far = rebase(records, 5 << 30)
    directory = central_directory(far, (5 << 30) + len(blob))
    assert b"\x01\x00\x08\x00" in directory  # the ZIP64 extended information field
    assert directory.count(b"PK\x06\x06") == 1 and directory.count(b"PK\x06\x07") == 1


def test_an_error_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError):
        with ArchiveWriter(tmp_path / "o.zip") as writer:
            writer.add(PARTS)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
