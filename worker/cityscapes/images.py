"""Source images for leftImg8bit (under imgsFine/ or at the root): passed through as they are,
or converted."""

from __future__ import annotations

import io
import posixpath

import numpy as np
from PIL import Image, UnidentifiedImageError

from worker.cityscapes.export import ZipLayout, ZipPart, left_image_path
from worker.cityscapes.manifest import ImageRecord
from worker.cityscapes.png import encode_png
from worker.errors import ImageSourceError

_PIL_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF",
                ".tiff": "TIFF", ".webp": "WEBP"}


def left_image_part(
    image: ImageRecord, data: bytes, image_ext: str | None = None, layout: ZipLayout = ZipLayout()
) -> ZipPart:
    """The zip entry of an image's photo; checks that it is an image of the annotated size."""
    try:
        photo = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageSourceError(f"image {image.name!r}: not a readable image ({exc})") from None
    if photo.size != (image.width, image.height):
        raise ImageSourceError(
            f"image {image.name!r} is {photo.size[0]}x{photo.size[1]},"
            f" the annotations say {image.width}x{image.height}"
        )
    source_ext = posixpath.splitext(image.name)[1].lower()
    if image_ext is None or image_ext == source_ext:
        return ZipPart(left_image_path(image, source_ext, layout), data)
    if image_ext not in _PIL_FORMATS:
        raise ImageSourceError(f"image extension {image_ext!r} is not one of {sorted(_PIL_FORMATS)}")
    try:
        if image_ext == ".png" and photo.mode in ("L", "RGB", "RGBA"):
            converted = encode_png(np.asarray(photo))
        else:
            if image_ext in (".jpg", ".jpeg") and photo.mode not in ("L", "RGB"):
                photo = photo.convert("RGB")
            buffer = io.BytesIO()
            photo.save(buffer, _PIL_FORMATS[image_ext])
            converted = buffer.getvalue()
    except OSError as exc:
        raise ImageSourceError(f"image {image.name!r}: cannot be decoded ({exc})") from None
    return ZipPart(left_image_path(image, image_ext, layout), converted)
