"""Run inside the Datumaro venv: import a Cityscapes folder and turn its masks into polygons, the
way CVAT imports a Cityscapes zip into a task; touches every annotation so nothing stays lazy.

    python datumaro_import.py DIR  ->  prints the number of polygons
"""

import sys

from datumaro.components.annotation import AnnotationType
from datumaro.components.dataset import Dataset


def main(path: str) -> None:
    dataset = Dataset.import_from(path, "cityscapes")
    dataset.transform("masks_to_polygons")
    polygons = sum(
        1 for item in dataset for ann in item.annotations if ann.type == AnnotationType.polygon
    )
    print(polygons)


if __name__ == "__main__":
    main(sys.argv[1])
