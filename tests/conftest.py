import json
import os
from pathlib import Path

import pytest
from PIL import Image

from worker.synth import make_photo


def _close_broker_connections() -> None:
    """Before this process forks (an in-process job's pool), close the broker connection pools
    the cluster tests' client made here. kombu closes inherited ones in each forked child, and a
    channel the parent left waiting on a BRPOP makes that close read a reply that goes to the
    parent: the child waits for ever, and the job with it (seen in test_scale now and then). The
    pools are found where kombu registers them for that clean-up (a private registry of
    multiprocessing: this is test glue). The product's processes never hold broker connections
    where they fork."""
    from multiprocessing import util

    from kombu.resource import Resource

    for resource in list(util._afterfork_registry.values()):
        if isinstance(resource, Resource):
            try:
                resource.force_close_all()
            except Exception:  # noqa: BLE001 - a server already stopped: nothing to wait for
                pass


os.register_at_fork(before=_close_broker_connections)


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
