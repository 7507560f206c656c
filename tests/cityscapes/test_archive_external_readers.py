"""Our ZIP64 output read by tools that are not Python's zipfile: Info-ZIP's `unzip -t` (Debian's
unzip) and libarchive's `bsdtar` (Debian's libarchive-tools), on an archive whose last entries
start past 4 GiB, so that their offsets exist only in ZIP64 extra fields."""

from __future__ import annotations

import shutil
import subprocess
import zlib

import pytest

from worker.cityscapes.archive import ArchiveWriter
from worker.cityscapes.export import ZipPart

GIB = 1 << 30
# Five stored 0.9 GiB entries: 4.5 GiB; the tail entries start past 2^32.
BIG_ENTRIES, BIG_SIZE = 5, 256 * (9 * GIB // 2560)


def tool(name: str, package: str) -> str:
    """The tool's path, installed from Debian's packages when the machine lacks it."""
    if shutil.which(name) is None:
        install = ["apt-get", "install", "-y", "-q", package]
        if subprocess.run(install, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, check=True)
            subprocess.run(install, capture_output=True, check=True)
    return shutil.which(name)


@pytest.fixture(scope="module")
def past_4_gib(tmp_path_factory):
    """(archive, {name: bytes of the small entries}); the big entries hold a known pattern."""
    block = bytes(range(256)) * (BIG_SIZE // 256)
    assert len(block) == BIG_SIZE
    tail = {"gtFine/train/far/far_000000_000000_gtFine_polygons.json": b'{"objects": []}' * 40,
            "gtFine/train/far/far_000000_000000_gtFine_labelIds.png": bytes(range(7, 250))}
    path = tmp_path_factory.mktemp("zip64") / "big.zip"
    with ArchiveWriter(path) as writer:
        for n in range(BIG_ENTRIES):
            writer.add([ZipPart(f"big/{n}.bin", block)])
        writer.add([ZipPart(name, data, compress=name.endswith(".json")) for name, data in tail.items()])
        writer.commit()
    assert path.stat().st_size > BIG_ENTRIES * BIG_SIZE > 1 << 32
    yield path, tail, zlib.crc32(block)
    path.unlink()


def test_info_zip_unzip_checks_every_entry_of_an_archive_past_4_gib(past_4_gib):
    path, tail, _ = past_4_gib
    done = subprocess.run([tool("unzip", "unzip"), "-t", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert f"No errors detected in compressed data of {path}" in done.stdout
    assert done.stdout.count("  OK") == BIG_ENTRIES + len(tail)
    # And it finds the entries past 4 GiB by name, with their bytes.
    for name, data in tail.items():
        one = subprocess.run(["unzip", "-p", str(path), name], capture_output=True)
        assert one.returncode == 0 and one.stdout == data, name


def test_bsdtar_lists_and_extracts_entries_past_4_gib(past_4_gib):
    path, tail, crc = past_4_gib
    bsdtar = tool("bsdtar", "libarchive-tools")
    listing = subprocess.run([bsdtar, "-tvf", str(path)], capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    rows = [line.split() for line in listing.stdout.splitlines()]
    sizes = {row[-1]: int(row[4]) for row in rows}
    assert sizes == {**{f"big/{n}.bin": BIG_SIZE for n in range(BIG_ENTRIES)},
                     **{name: len(data) for name, data in tail.items()}}
    for name, data in tail.items():
        one = subprocess.run([bsdtar, "-xOf", str(path), name], capture_output=True)
        assert one.returncode == 0 and one.stdout == data, (name, one.stderr)
    # The last big entry, which runs across the 4 GiB mark, read whole and checked by its CRC.
    last = subprocess.run([bsdtar, "-xOf", str(path), f"big/{BIG_ENTRIES - 1}.bin"],
                          capture_output=True)
    assert last.returncode == 0 and zlib.crc32(last.stdout) == crc, last.stderr
