"""Writing the output zip: entries streamed to a temporary file, renamed into place when whole."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable

from worker.cityscapes.export import ZipPart

# A fixed timestamp makes the same input give the same archive, byte for byte.
ENTRY_TIME = (1980, 1, 1, 0, 0, 0)
LABEL_COLOR_FILE = "label_color.txt"


def zip_info(part: ZipPart) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(part.path, ENTRY_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED if part.compress else zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info


class ArchiveWriter:
    """A zip that appears at `path` only once complete; `abort` (or an exception) leaves nothing."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.bytes_written = 0
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent)
        self._tmp = Path(tmp)
        self._zip = zipfile.ZipFile(os.fdopen(fd, "w+b"), "w", allowZip64=True, compresslevel=1)

    def add(self, parts: Iterable[ZipPart]) -> None:
        for part in parts:
            self._zip.writestr(zip_info(part), part.data)

    def commit(self) -> int:
        """Close the archive and move it into place; returns its size in bytes."""
        fp = self._zip.fp
        self._zip.close()
        fp.flush()
        os.fsync(fp.fileno())
        fp.close()
        os.chmod(self._tmp, 0o644)
        os.replace(self._tmp, self.path)
        self.bytes_written = self.path.stat().st_size
        return self.bytes_written

    def abort(self) -> None:
        try:
            fp = self._zip.fp
            self._zip.close()
            if fp:
                fp.close()
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
