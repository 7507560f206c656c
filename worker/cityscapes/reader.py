"""Reading a Cityscapes zip without trusting it: member names, sizes and images are checked
before anything is decoded.

Layouts: `gtFine/<city>/<name>_gtFine_*` (the seed's), `gtFine/<subset>/<city>/...` (our export),
either under one extra top folder; `label_color.txt` or `label_colors.txt` beside `gtFine`. Photos
(`<name>_leftImg8bit.<ext>`, only located, never read here) lie in the same folders under
`imgsFine/leftImg8bit/` (the format description's) or `leftImg8bit/` (the original dataset's).
"""

from __future__ import annotations

import io
import os
import posixpath
import struct
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
from PIL import Image

from worker.cityscapes.labels import LabelMap, parse_label_color_txt
from worker.cityscapes.manifest import MAX_PIXELS, check_relative_path
from worker.cityscapes.png import decode_grey
from worker.errors import ClientError

KNOWN_SUBSETS = frozenset({"train", "val", "test", "default", "train_extra", "trainextra"})
LABEL_FILES = ("label_color.txt", "label_colors.txt")
KINDS = {
    "_gtFine_instanceIds.png": "instanceIds",
    "_gtFine_labelIds.png": "labelIds",
    "_gtFine_color.png": "color",
    "_gtFine_polygons.json": "polygons",
}
PHOTO_FOLDERS = ("leftImg8bit/", "imgsFine/leftImg8bit/")
PHOTO_SUFFIX = "_leftImg8bit"
PHOTO_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
MAX_MEMBERS = 500_000
MAX_TOTAL_BYTES = 16 << 30  # uncompressed
MAX_RATIO = 500  # uncompressed / compressed, for members over 1 MiB
MAX_MEMBER_BYTES = 512 << 20  # what one member may expand to (a noisy 16-bit PNG at MAX_PIXELS)
# polygons.json is parsed whole into Python objects, about 12 times its size (measured: 32 MiB
# import took 3.5 s and 528 MB at 31 MiB); the largest of the Cityscapes dataset is about 1 MiB.
MAX_POLYGONS_BYTES = 16 << 20
MAX_LABEL_FILE_BYTES = 1 << 20
# Only these are read: the others (Deflate64, bzip2, LZMA, ...) are refused by name, not guessed.
READABLE_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
METHOD_NAMES = {9: "Deflate64", 12: "bzip2", 14: "LZMA", 93: "Zstandard", 95: "xz", 98: "PPMd",
                99: "AES-encrypted"}
# Our own size check (MAX_PIXELS, as the export's) decides; Pillow's lower default would refuse
# images that the export writes. Its bomb warnings are silenced where images are opened.
Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, MAX_PIXELS)


class ArchiveError(ClientError):
    """The archive is malformed or hostile; the message names the member."""


@dataclass
class Item:
    name: str  # item name: "<city>/<stem>" (or "<stem>"), what the backend's images are called
    subset: str
    members: dict[str, str] = field(default_factory=dict)  # kind -> member name
    photo: str | None = None  # member name of the photo, when the archive has one


@dataclass
class ArchiveIndex:
    items: list[Item]
    label_file: str | None


def check_member_name(name: str) -> None:
    parts = name.split("/")
    if (
        name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or ":" in parts[0]
        or any(part == ".." for part in parts)
    ):
        raise ArchiveError(f"member {name!r}: absolute or escaping path (zip-slip); archive refused")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ArchiveError(f"member {name!r}: the name is not valid Unicode") from None


def open_zip(file: str | os.PathLike | BinaryIO, name: str) -> zipfile.ZipFile:
    """zipfile's reader over an untrusted archive: what its central directory causes is an
    ArchiveError naming `name`."""
    try:
        return zipfile.ZipFile(file)
    except (zipfile.BadZipFile, EOFError, struct.error, OverflowError) as exc:
        raise ArchiveError(f"{name}: not a zip archive ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ArchiveError(
            f"{name}: a member name marked UTF-8 is not UTF-8 (byte {exc.start}: {exc.reason})"
        ) from None


def check_member_readable(info: zipfile.ZipInfo) -> None:
    """Refuse, by name, members that zipfile would fail on (or read with a method we never test)."""
    if info.flag_bits & 0x1:
        raise ArchiveError(f"member {info.filename!r} is encrypted; encrypted archives are not read")
    if info.compress_type not in READABLE_METHODS:
        method = METHOD_NAMES.get(info.compress_type, "unknown")
        raise ArchiveError(
            f"member {info.filename!r}: compression method {info.compress_type} ({method});"
            " only stored and deflate are read"
        )


def member_limit(name: str) -> int:
    """How many bytes a member may expand to, by what it is."""
    if name.endswith("_gtFine_polygons.json"):
        return MAX_POLYGONS_BYTES
    if posixpath.basename(name) in LABEL_FILES:
        return MAX_LABEL_FILE_BYTES
    return MAX_MEMBER_BYTES


def scan_archive(archive: zipfile.ZipFile) -> ArchiveIndex:
    """The items of a Cityscapes zip, after checking every member's name and size."""
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ArchiveError(f"{len(infos)} members; at most {MAX_MEMBERS} are accepted")
    total = 0
    for info in infos:
        check_member_name(info.filename)
        total += info.file_size
        if info.file_size > 1 << 20 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise ArchiveError(
                f"member {info.filename!r} expands {info.file_size // max(info.compress_size, 1)}"
                f" times (zip bomb?); at most {MAX_RATIO}x is accepted"
            )
    if total > MAX_TOTAL_BYTES:
        raise ArchiveError(f"archive expands to {total} bytes; at most {MAX_TOTAL_BYTES} accepted")

    names = [i.filename for i in infos if not i.is_dir()]
    twice = [name for name, count in Counter(names).items() if count > 1]
    if twice:  # zipfile would read one of them, silently
        raise ArchiveError(f"member {twice[0]!r} is in the archive {names.count(twice[0])} times")
    root = _root(names)
    label_file = next((root + f for f in LABEL_FILES if root + f in names), None)
    items: dict[tuple[str, str], Item] = {}
    photos: dict[tuple[str, str], str] = {}
    for name in names:
        rel = name[len(root) :] if name.startswith(root) else ""
        if rel.startswith("gtFine/"):
            kind = next((k for k in KINDS if rel.endswith(k)), None)
            if kind is None:
                continue
            subset, item_name = _item_key(rel[len("gtFine/") : -len(kind)])
            _check_item_name(subset, item_name, name)
            item = items.setdefault((subset, item_name), Item(item_name, subset))
            item.members[KINDS[kind]] = name
            continue
        folder = next((f for f in PHOTO_FOLDERS if rel.startswith(f)), None)
        stem, ext = posixpath.splitext(rel)
        if folder and stem.endswith(PHOTO_SUFFIX) and ext.lower() in PHOTO_EXTENSIONS:
            photos[_item_key(stem[len(folder) : -len(PHOTO_SUFFIX)])] = name
    if not items:
        raise ArchiveError("no gtFine/**/*_gtFine_instanceIds.png (or labelIds, color, polygons)")
    for key, member in photos.items():
        if key in items:
            items[key].photo = member
    by_name = {info.filename: info for info in infos}
    for member in [*(m for item in items.values() for m in item.members.values()), label_file]:
        if member is not None:
            check_member_readable(by_name[member])
    return ArchiveIndex(sorted(items.values(), key=lambda i: (i.subset, i.name)), label_file)


def _check_item_name(subset: str, item_name: str, member: str) -> None:
    """The item's name and subset must be ones the manifest accepts (the import writes them)."""
    try:
        check_relative_path(item_name, "image name")
        check_relative_path(subset, "subset")
    except ValueError as exc:
        raise ArchiveError(f"member {member!r}: {exc}") from None


def _item_key(path: str) -> tuple[str, str]:
    """(subset, item name) of a member path below gtFine/ or leftImg8bit/, its suffix removed."""
    *folders, stem = path.split("/")
    subset, city = _subset_and_city(folders)
    return subset, posixpath.join(city, stem) if city else stem


def _root(names: list[str]) -> str:
    """'' when gtFine/ is at the top, else the one folder holding it."""
    if any(n.startswith("gtFine/") for n in names):
        return ""
    tops = {n.split("/", 1)[0] + "/" for n in names if "/gtFine/" in n and n.count("/") >= 2}
    candidates = [t for t in tops if any(n.startswith(t + "gtFine/") for n in names)]
    if len(candidates) == 1:
        return candidates[0]
    raise ArchiveError("no gtFine folder at the top of the archive or under one top folder")


def _subset_and_city(folders: list[str]) -> tuple[str, str]:
    if not folders:
        return "default", ""
    if len(folders) == 1:
        return (folders[0], "") if folders[0].lower() in KNOWN_SUBSETS else ("default", folders[0])
    return folders[0], "/".join(folders[1:])


def read_member(archive: zipfile.ZipFile, name: str, limit: int | None = None) -> bytes:
    """A member's bytes, refusing more than `limit` (whatever its header claims; by default the
    member_limit of its kind) and any member that is damaged or that zipfile cannot read."""
    limit = member_limit(name) if limit is None else limit
    info = archive.getinfo(name)
    check_member_readable(info)
    if info.file_size > limit:
        raise ArchiveError(f"member {name!r} is {info.file_size} bytes; at most {limit} are read")
    try:
        with archive.open(info) as stream:
            data = stream.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise ArchiveError(f"member {name!r} is damaged ({_reason(exc)})") from None
    except UnicodeDecodeError:
        raise ArchiveError(f"member {name!r}: its local header name is not UTF-8") from None
    if len(data) > limit:
        raise ArchiveError(f"member {name!r} is larger than {limit} bytes")
    return data


def _reason(exc: Exception) -> str:
    text = str(exc)
    if "CRC-32" in text:
        return "CRC check failed"
    if "differ" in text:
        return "its local header names another file than the central directory"
    if isinstance(exc, zlib.error):
        return "invalid deflate data"
    if isinstance(exc, EOFError):
        return "its data ends early"
    return text.split(":")[0][:80] or type(exc).__name__


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR, before anything else reads the file."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    return None


def check_png_chunks(data: bytes, member: str) -> None:
    """Every chunk whole, its CRC right, up to IEND: Pillow checks neither of the image data, so
    a PNG cut short can decode as if whole."""
    at = 8
    while True:
        if at + 12 > len(data):
            raise ArchiveError(f"member {member!r}: not a readable PNG (truncated)")
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        end = at + 12 + length
        if end > len(data):
            raise ArchiveError(f"member {member!r}: not a readable PNG (truncated in {kind!r})")
        if zlib.crc32(data[at + 4 : end - 4]) != struct.unpack(">I", data[end - 4 : end])[0]:
            raise ArchiveError(f"member {member!r}: not a readable PNG (bad CRC in {kind!r})")
        if kind == b"IEND":
            return
        at = end


def _decode(
    data: bytes,
    member: str,
    modes: tuple[str, ...] | None,
    convert: str | None,
    plain: Callable[[bytes], np.ndarray | None] | None = None,
) -> np.ndarray:
    """Pixels of an image member, its size checked before decoding: by `plain`, a decoder of the
    common PNGs, once its chunks are checked, unless it declines; else by Pillow, not libpng:
    libpng prints its warnings to stderr itself; Pillow's (warnings.warn) are silenced here, and a
    broken or truncated file raises, which becomes one line naming the member."""
    size = png_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise ArchiveError(
            f"member {member!r}: {size[0]}x{size[1]}, more than {MAX_PIXELS:,} pixels"
            " (decompression bomb?)"
        )
    if size is not None:
        check_png_chunks(data, member)
        pixels = None if plain is None else plain(data)
        if pixels is not None:
            return pixels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ArchiveError(
                    f"member {member!r}: {width}x{height}, more than {MAX_PIXELS:,} pixels"
                    " (decompression bomb?)"
                )
            if modes is not None and image.mode not in modes:
                raise ArchiveError(
                    f"member {member!r}: mode {image.mode}; ids images are 8- or 16-bit grey"
                )
            image.load()
            if convert is not None and image.mode != convert:
                image = image.convert(convert)
            return np.asarray(image)
        except ArchiveError:
            raise
        except Image.DecompressionBombError:
            raise ArchiveError(f"member {member!r}: too many pixels (decompression bomb?)") from None
        except MemoryError:
            raise ArchiveError(f"member {member!r}: too large to decode") from None
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken files
            reason = "truncated" if "truncated" in str(exc) else type(exc).__name__
            kind = "PNG" if member.lower().endswith(".png") or size else "image"
            raise ArchiveError(f"member {member!r}: not a readable {kind} ({reason})") from None


def decode_ids_png(data: bytes, member: str) -> np.ndarray:
    """A grey 8- or 16-bit PNG as an (H, W) uint8 or uint16 array."""
    pixels = _decode(data, member, ("L", "I;16", "I;16B", "I;16L", "I"), None, decode_grey)
    if pixels.ndim != 2:
        raise ArchiveError(f"member {member!r}: cannot be decoded as a grey image")
    if pixels.dtype.kind == "i":  # mode I: 32-bit, but only ids up to 16 bits are images' values
        if pixels.size and (pixels.min() < 0 or pixels.max() > 0xFFFF):
            raise ArchiveError(f"member {member!r}: values beyond 16 bits")
        pixels = pixels.astype(np.uint16)
    return pixels.astype(pixels.dtype.newbyteorder("="), copy=False)


def decode_color_png(data: bytes, member: str) -> np.ndarray:
    """An image member (a color PNG, or a photo) as an (H, W, 3) RGB array."""
    return _decode(data, member, None, "RGB")


def archive_label_map(archive: zipfile.ZipFile, label_file: str | None) -> LabelMap:
    """The archive's own label_color.txt (line order = id), else the Cityscapes table."""
    if label_file is None:
        return LabelMap.cityscapes()
    data = read_member(archive, label_file)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ArchiveError(f"{label_file} line {line}: not UTF-8 text") from None
    return LabelMap.from_label_color_txt(parse_label_color_txt(text, label_file))
