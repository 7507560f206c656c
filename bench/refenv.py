"""Virtual environments for heavy reference tools, kept apart from the product's own install.

Each is created on first use under $CITYSCAPES_WORKER_CACHE (default ~/.cache/cityscapes-worker)
and reused while its requirements stay the same.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
import venv
from pathlib import Path

DATUMARO = ("datumaro==1.13.*",)
# The releases this kind of machine keeps on disk (x86_64: a CUDA build, run on the CPU here).
TORCHVISION = (("torch==2.14.1", "torchvision==0.29.1") if platform.machine() == "x86_64"
               else ("torch==2.9.1", "torchvision==0.24.1"))


def cache_root() -> Path:
    default = Path.home() / ".cache" / "cityscapes-worker"
    return Path(os.environ.get("CITYSCAPES_WORKER_CACHE", default))


def reference_python(name: str, requirements: tuple[str, ...]) -> Path:
    """The python of a venv holding `requirements`, created (once) if missing."""
    digest = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:12]
    home = cache_root() / "venvs" / f"{name}-{digest}"
    python = home / "bin" / "python"
    ready = home / ".ready"
    if ready.exists():
        return python
    venv.EnvBuilder(with_pip=True, clear=True).create(home)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *requirements],
        check=True,
        stdout=sys.stderr,
    )
    ready.write_text("\n".join(requirements))
    return python
