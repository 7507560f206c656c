"""Reading a Cityscapes zip without trusting it: member names, sizes and images are checked
before anything is decoded.

Layouts: `gtFine/<city>/<name>_gtFine_*` (the seed's), `gtFine/<subset>/<city>/...` (our export),
either under one extra top folder; `label_color.txt` or `label_colors.txt` beside `gtFine`. Photos
(`<name>_leftImg8bit.<ext>`, only located, never read here) lie in the same folders under
`imgsFine/leftImg8bit/` (the format description's) or `leftImg8bit/` (the original dataset's).
"""

from __future__ import annotations

import io
import posixpath
import zipfile
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from worker.cityscapes.labels import LabelMap, parse_label_color_txt
from worker.cityscapes.manifest import MAX_PIXELS
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
MAX_MEMBER_BYTES = 512 << 20  # what one member may expand to
# A broken PNG is reported by our own message; OpenCV's warnings on stderr would only add noise.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


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
    return ArchiveIndex(sorted(items.values(), key=lambda i: (i.subset, i.name)), label_file)


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


def read_member(archive: zipfile.ZipFile, name: str, limit: int = MAX_MEMBER_BYTES) -> bytes:
    """A member's bytes, refusing more than `limit` (whatever its header claims)."""
    with archive.open(name) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise ArchiveError(f"member {name!r} is larger than {limit} bytes")
    return data


def _open_png(data: bytes, member: str) -> Image.Image:
    """Pillow's view of the header (nothing decoded yet)."""
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ArchiveError(f"member {member!r}: too many pixels (decompression bomb?)") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken files
        raise ArchiveError(f"member {member!r}: not a readable PNG ({type(exc).__name__})") from None


def decode_ids_png(data: bytes, member: str) -> np.ndarray:
    """A grey 8- or 16-bit PNG as an array, checking its size before decoding it."""
    header = _open_png(data, member)
    width, height = header.size
    if width * height > MAX_PIXELS:
        raise ArchiveError(f"member {member!r}: {width}x{height}, too many pixels (decompression bomb?)")
    if header.mode not in ("L", "I;16", "I;16B", "I;16L", "I"):
        raise ArchiveError(
            f"member {member!r}: mode {header.mode}; ids images are 8- or 16-bit grey"
        )
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.ndim != 2:
        raise ArchiveError(f"member {member!r}: cannot be decoded as a grey image")
    return pixels


def decode_color_png(data: bytes, member: str) -> np.ndarray:
    """An RGB(A) PNG as an (H, W, 3) RGB array, checking its size before decoding it."""
    header = _open_png(data, member)
    if header.size[0] * header.size[1] > MAX_PIXELS:
        raise ArchiveError(f"member {member!r}: {header.size}, too many pixels (decompression bomb?)")
    return np.asarray(header.convert("RGB"))


def archive_label_map(archive: zipfile.ZipFile, label_file: str | None) -> LabelMap:
    """The archive's own label_color.txt (line order = id), else the Cityscapes table."""
    if label_file is None:
        return LabelMap.cityscapes()
    text = read_member(archive, label_file, 1 << 20).decode("utf-8", errors="replace")
    labels = parse_label_color_txt(text, label_file)
    official = LabelMap.cityscapes([name for name, _ in labels])
    if all(getattr(official.lookup(name), "id", None) == i for i, (name, _) in enumerate(labels)):
        return official  # the official table, in its order: keep its instance flags, plates
    return LabelMap.from_task(labels, "custom")
