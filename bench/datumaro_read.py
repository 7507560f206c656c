"""Run inside the Datumaro venv: import a Cityscapes folder, print what Datumaro found as JSON.

    python datumaro_read.py DIR  ->  {"items": {id: {"subset": s, "masks": {label: pixels}}}}
"""

import json
import sys

import numpy as np
from datumaro.components.annotation import AnnotationType
from datumaro.components.dataset import Dataset


def main(path: str) -> None:
    dataset = Dataset.import_from(path, "cityscapes")
    labels = dataset.categories()[AnnotationType.label]
    items = {}
    for item in dataset:
        masks = {}
        for ann in item.annotations:
            if ann.type == AnnotationType.mask:
                masks[labels[ann.label].name] = int(np.count_nonzero(ann.image))
        items[item.id] = {"subset": item.subset, "masks": masks, "has_image": item.media is not None}
    print(json.dumps({"items": items, "labels": [label.name for label in labels]}))


if __name__ == "__main__":
    main(sys.argv[1])
