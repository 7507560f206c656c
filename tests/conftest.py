import json
from pathlib import Path

import pytest
from PIL import Image

from worker.synth import make_photo


@pytest.fixture
def write_manifest(tmp_path: Path):
    """Write a manifest dict to a file and return its path."""

    def write(manifest: dict, name: str = "manifest.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(manifest))
        return path

    return write


@pytest.fixture
def write_photos(tmp_path: Path):
    """Write a synthetic photo for every image of a manifest, by its name; return the folder."""

    def write(manifest: dict, folder: str = "images") -> Path:
        root = tmp_path / folder
        for image in manifest["images"]:
            path = root / image["name"]
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(make_photo(image["id"], image["width"], image["height"])).save(path)
        return root

    return write
