"""Run inside the torchvision venv: load a Cityscapes root with torchvision's own dataset class and
print, per sample, what it handed over as JSON.

    python torchvision_read.py ROOT SPLIT [SPLIT ...]  ->  [{"image": path, "size": [w, h], "semantic": sha1,
                                                "instance": sha1, "color": sha1, "objects": n}]
"""

import hashlib
import json
import sys

import numpy as np
from torchvision.datasets import Cityscapes


def digest(image) -> str:
    return hashlib.sha1(np.asarray(image).astype(np.int64).tobytes()).hexdigest()


def main(root: str, *splits: str) -> None:
    """One process for every split: importing torch costs more than reading a small root."""
    samples = []
    for split in splits:
        samples += read_split(root, split)
    print(json.dumps(samples))


def read_split(root: str, split: str) -> list[dict]:
    dataset = Cityscapes(root, split=split, mode="fine",
                         target_type=["semantic", "instance", "color", "polygon"])
    samples = []
    for index in range(len(dataset)):
        image, (semantic, instance, color, polygons) = dataset[index]
        samples.append({
            "image": dataset.images[index], "size": list(image.size),
            "semantic": digest(semantic), "instance": digest(instance), "color": digest(color),
            "objects": len(polygons["objects"]),
        })
    return samples


if __name__ == "__main__":
    main(*sys.argv[1:])
