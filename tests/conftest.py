import json
import os
from pathlib import Path

import pytest
from PIL import Image

from worker.synth import make_photo


_held_open: list = []


def _hide_broker_pools_from_the_child() -> None:
    """Before this process forks (an in-process job's pool), mark the broker connection pools
    its cluster client made as closed, and open them again in the parent right after. kombu
    closes inherited pools in each forked child, and a channel the parent left waiting on a
    BRPOP makes that close read a reply that goes to the parent: the child waited for ever, and
    the job with it (test_scale, the panoptic cluster test, now and then); a pool marked closed
    is skipped. The pools are found where kombu registers them for that clean-up (a private
    registry of multiprocessing: this is test glue). The product's processes never hold broker
    connections where they fork."""
    from multiprocessing import util

    from kombu.resource import Resource

    for resource in list(util._afterfork_registry.values()):
        if isinstance(resource, Resource) and not resource._closed:
            resource._closed = True
            _held_open.append(resource)


def _reopen_broker_pools() -> None:
    while _held_open:
        _held_open.pop()._closed = False


os.register_at_fork(before=_hide_broker_pools_from_the_child, after_in_parent=_reopen_broker_pools,
                    after_in_child=_held_open.clear)


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
