import os
import stat
import struct
import subprocess
import zipfile

import pytest

from worker.cityscapes.archive import (
    ArchiveWriter,
    EntryRecord,
    central_directory,
    encode_entries,
    encode_entry,
    join_runs,
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


def test_headers_hold_the_fields_the_zip_specification_asks(tmp_path):
    blob, records = encode_entries(PARTS)
    path = tmp_path / "h.zip"
    path.write_bytes(blob + central_directory(records, len(blob)))
    with zipfile.ZipFile(path) as archive:
        for info, part in zip(archive.infolist(), PARTS):
            utf8 = 0 if part.path.isascii() else 0x800  # general purpose bit 11: UTF-8 name
            assert (info.flag_bits, info.date_time) == (utf8, (1980, 1, 1, 0, 0, 0))
            assert (info.create_system, info.create_version, info.extract_version) == (3, 45, 20)
            assert (info.volume, info.internal_attr) == (0, 0)
            assert info.external_attr >> 16 == stat.S_IFREG | 0o644
            method = zipfile.ZIP_DEFLATED if part.compress else zipfile.ZIP_STORED
            assert info.compress_type == method
            # The local header repeats the central one (no data descriptor follows the data).
            local = struct.unpack_from("<IHHHHHIIIHH", blob, info.header_offset)
            assert local == (0x04034B50, 20, utf8, method, 0, 0x21, info.CRC, info.compress_size,
                             info.file_size, len(part.path.encode()), 0)


def central_fields(directory: bytes) -> list[tuple[int, int, bytes]]:
    """(version needed, offset field, extra field) of each central header."""
    out, at = [], 0
    while directory[at : at + 4] == b"PK\x01\x02":
        needed, name_length, extra_length = struct.unpack_from("<6xH20xHH", directory, at)
        (offset,) = struct.unpack_from("<I", directory, at + 42)
        extra = directory[at + 46 + name_length : at + 46 + name_length + extra_length]
        out.append((needed, offset, extra))
        at += 46 + name_length + extra_length
    return out


def test_an_offset_of_exactly_0xffffffff_moves_to_the_zip64_field():
    # 0xFFFFFFFF in the 4-byte field means "see the ZIP64 extra field": the value itself too.
    _, records = encode_entries(PARTS[:1])
    directory = central_directory(rebase(records, 0xFFFFFFFF), 0xFFFFFFFF + 100)
    assert central_fields(directory) == [(45, 0xFFFFFFFF, struct.pack("<HHQ", 1, 8, 0xFFFFFFFF))]
    below = central_directory(rebase(records, 0xFFFFFFFE), 0xFFFFFFFE + 100)
    assert central_fields(below) == [(20, 0xFFFFFFFE, b"")]


def zip64_end(directory: bytes) -> tuple | None:
    """The ZIP64 end of central directory record's fields, if there is one."""
    at = directory.find(b"PK\x06\x06")
    return None if at < 0 else struct.unpack_from("<IQHHIIQQQQ", directory, at)


@pytest.mark.parametrize("count, start, zip64", [
    (0xFFFE, 0, False), (0xFFFF, 0, True),  # 0xFFFF entries: the 2-byte count's sentinel
    (1, 0xFFFFFFFE, False), (1, 0xFFFFFFFF, True),  # and the 4-byte start's
])
def test_the_zip64_end_record_is_written_from_the_sentinel_values_on(count, start, zip64):
    records = [EntryRecord("a", 0, 0, 0, 0, 0)] * count
    directory = central_directory(records, start)
    size = 47 * count  # a central header of a one-letter name
    assert zip64_end(directory) == ((0x06064B50, 44, (3 << 8) | 45, 45, 0, 0, count, count,
                                     size, start) if zip64 else None)
    end = struct.unpack("<IHHHHIIH", directory[-22:])
    assert end == (0x06054B50, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF), size,
                   min(start, 0xFFFFFFFF), 0)


def test_runs_encoded_apart_join_with_their_offsets_and_records_survive_json():
    whole, records = encode_entries(PARTS)
    joined, joined_records = join_runs([encode_entries(PARTS[:1]), encode_entries(PARTS[1:2]),
                                        encode_entries(PARTS[2:])])
    assert (joined, joined_records) == (whole, records)
    assert [EntryRecord(**r.to_json()) for r in records] == records
    assert encode_entry(PARTS[0])[1].offset == 0


def spool(tmp_path, lead: bytes = b"junk before the run"):
    """A run written to a file by 'another process', after some bytes of its own."""
    blob, records = encode_entries(PARTS)
    path = tmp_path / "run.spool"
    path.write_bytes(lead + blob + b"and after")
    return str(path), len(lead), len(blob), records


def copy_in_pieces(monkeypatch, fail: bool) -> None:
    """The kernel's copy_file_range made to copy a byte a call (as it may), or to fail."""
    real = os.copy_file_range

    def piecewise(source, target, count, offset):
        if fail:
            raise OSError("not on this file system")
        return real(source, target, min(count, 1), offset)

    monkeypatch.setattr(os, "copy_file_range", piecewise)


@pytest.mark.parametrize("fail", [False, True], ids=["short copies", "no copy_file_range"])
def test_a_spooled_run_is_copied_whole_in_pieces_or_through_memory(tmp_path, monkeypatch, fail):
    path, offset, size, records = spool(tmp_path)
    copy_in_pieces(monkeypatch, fail)
    with ArchiveWriter(tmp_path / "s.zip") as writer:
        writer.add([ZipPart("before.txt", b"written here")])
        writer.add_spooled(path, offset, size, records)
        writer.commit()
    check(tmp_path / "s.zip", [ZipPart("before.txt", b"written here")] + PARTS)


@pytest.mark.parametrize("fail", [False, True], ids=["copy_file_range", "through memory"])
def test_a_spool_file_shorter_than_its_run_is_an_error(tmp_path, monkeypatch, fail):
    path, offset, size, records = spool(tmp_path, lead=b"")
    if fail:
        copy_in_pieces(monkeypatch, fail)
    with pytest.raises(OSError, match=rf"^copy of 9 bytes at {size + 9} stopped$"):
        with ArchiveWriter(tmp_path / "s.zip") as writer:
            writer.add_spooled(path, offset, size + 18, records)


def test_the_archive_is_a_hidden_part_file_beside_it_until_committed(tmp_path):
    with ArchiveWriter(tmp_path / "o.zip") as writer:
        writer.add(PARTS)
        (pending,) = tmp_path.iterdir()
        assert pending.name.startswith(".o.zip.") and pending.name.endswith(".part")
        writer.commit()
    (done,) = tmp_path.iterdir()
    assert done.name == "o.zip" and stat.S_IMODE(done.stat().st_mode) == 0o644


def test_an_error_after_the_commit_keeps_the_archive_and_is_raised_as_it_is(tmp_path):
    with pytest.raises(RuntimeError, match="after"):
        with ArchiveWriter(tmp_path / "o.zip") as writer:
            writer.add(PARTS)
            writer.commit()
            raise RuntimeError("after")
    check(tmp_path / "o.zip", PARTS)
