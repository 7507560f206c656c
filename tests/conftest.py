import json
from pathlib import Path

import pytest


@pytest.fixture
def write_manifest(tmp_path: Path):
    """Write a manifest dict to a file and return its path."""

    def write(manifest: dict, name: str = "manifest.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(manifest))
        return path

    return write
