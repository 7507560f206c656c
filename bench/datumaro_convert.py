"""Run inside the Datumaro venv: a CVAT or COCO folder -> Cityscapes zip, as a Datumaro user does.

    python datumaro_convert.py FORMAT DIR OUT.zip [--draw-shapes]

FORMAT is a Datumaro importer name ("cvat", "coco_instances"). The plain conversion is
`Dataset.import_from(DIR, FORMAT).export(folder, "cityscapes", save_media=False)` and a zip of
the folder. Datumaro's Cityscapes exporter writes masks only, so polygons and boxes do not reach
its PNGs that way; --draw-shapes first applies the two transforms a user then adds
(polygons_to_masks, boxes_to_masks), so that the PNGs hold the whole scene.
"""

import sys
import tempfile

from datumaro.components.dataset import Dataset
from datumaro_export import zip_folder


def main(fmt: str, source: str, out: str, draw_shapes: bool) -> None:
    dataset = Dataset.import_from(source, fmt)
    if draw_shapes:
        dataset.transform("polygons_to_masks")
        dataset.transform("boxes_to_masks")
    with tempfile.TemporaryDirectory(prefix="datumaro-convert-") as folder:
        dataset.export(folder, "cityscapes", save_media=False)
        zip_folder(folder, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], "--draw-shapes" in sys.argv[4:])
