"""Preview: class colours blended where the masks are, instance outlines, a legend beside."""

import io
import zipfile

import cv2
import numpy as np
import pytest
from PIL import Image

from worker.cityscapes.labels import LabelMap
from worker.cityscapes.preview import GREY, OUTLINE, PANEL, preview_archive, render_overlay
from worker.cityscapes.reader import ArchiveError
from worker.errors import ClientError
from worker.export_local import run_export
from worker.specs import parse_export_spec
from worker.synth import make_manifest

OFFICIAL = LabelMap.cityscapes()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture
def export_zip(tmp_path, write_manifest, write_photos):
    def make(save_images: bool, layout: str = "cvat") -> zipfile.ZipFile:
        manifest = make_manifest(2, width=160, height=80, seed=9, objects=12, stuff_vertices=20)
        spec = {"annotations": str(write_manifest(manifest)), "output": str(tmp_path / "o.zip"),
                "layout": layout}
        if save_images:
            spec.update(images=str(write_photos(manifest)), save_images=True)
        run_export(parse_export_spec(spec), jobs=1)
        return zipfile.ZipFile(tmp_path / "o.zip")

    return make


def expected_overlay(ids: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The blend (half class colour, half base) where a class is, and each instance's border:
    its pixels with a 4-neighbour outside it (by erosion, not by the code under test)."""
    classes = np.where(ids >= 1000, ids // 1000, ids)
    colors = np.zeros(base.shape, np.float64)
    for class_id in np.unique(classes):
        colors[classes == class_id] = OFFICIAL.by_id(int(class_id)).color
    painted = (classes > 0)[..., None]
    blended = np.where(painted, (base + colors) / 2, base)
    border = np.zeros(ids.shape, bool)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    for value in np.unique(ids[ids >= 1000]):
        mask = (ids == value).astype(np.uint8)
        border |= (mask > cv2.erode(mask, cross)).astype(bool)
    return blended, border


@pytest.mark.parametrize(
    "save_images, layout", [(True, "cvat"), (True, "cityscapes"), (False, "cvat")]
)
def test_overlay_has_the_class_colours_where_the_masks_are(export_zip, save_images, layout):
    archive = export_zip(save_images, layout)
    preview = preview_archive(archive, "lindau/lindau_000001_000019")
    item = preview.item
    ids = np.asarray(Image.open(archive.open(item.members["instanceIds"]))).astype(np.int64)
    height, width = ids.shape
    base = decode(archive.read(item.photo)) if save_images else np.full((height, width, 3), GREY)
    out = decode(preview.png)
    picture = out[:height, :width].astype(np.int64)

    blended, border = expected_overlay(ids, base.astype(np.float64))
    assert border.sum() > 100 and preview.instances == len(np.unique(ids[ids >= 1000])) > 3
    assert (picture[border] == OUTLINE).all()
    inside = ~border
    assert np.abs(picture[inside] - blended[inside]).max() <= 1
    assert (picture[ids == 0] == base[ids == 0]).all()  # unlabelled pixels show the photo

    # The legend: a panel right of the picture with a swatch of each class present.
    legend = out[:, width:]
    assert legend.shape[1] > 40 and (legend == PANEL).all(axis=-1).mean() > 0.5
    classes = sorted({int(v) // 1000 if v >= 1000 else int(v) for v in np.unique(ids)} - {0})
    assert preview.classes == [OFFICIAL.by_id(c).name for c in classes]
    for class_id in classes:
        swatch = (legend == OFFICIAL.by_id(class_id).color).all(axis=-1)
        assert swatch.sum() >= 25, OFFICIAL.by_id(class_id).name


def test_render_of_a_small_hand_made_image():
    ids = np.zeros((10, 12), np.int32)
    ids[2:6, 2:7] = 26000  # a car
    ids[8:10, :] = 7  # road, no instances
    picture, classes = render_overlay(ids, OFFICIAL)
    assert classes == ["road", "car"]
    assert picture.shape[0] >= 10 and picture.shape[1] > 12
    assert (picture[3:5, 3:6] == (64, 64, 135)).all()  # half grey, half car blue
    assert (picture[2, 2:7] == OUTLINE).all() and (picture[2:6, 6] == OUTLINE).all()
    assert (picture[8:10, :12] == (128, 96, 128)).all()  # road: no outline
    assert (picture[0:2, :12] == GREY).all() and (picture[7, :12] == GREY).all()


def test_items_are_found_by_name_subset_or_file_name(export_zip):
    archive = export_zip(True)
    name = "frankfurt/frankfurt_000000_000019"
    for wanted in (name, f"train/{name}", "frankfurt_000000_000019", f"{name}_leftImg8bit.png"):
        assert preview_archive(archive, wanted).item.name == name
    assert preview_archive(archive).item.name == name  # the first
    with pytest.raises(ClientError, match="'nope' is not in the archive; it has frankfurt/"):
        preview_archive(archive, "nope")


def test_zip_without_gt_fine_is_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("leftImg8bit/train/a/a_000000_000001_leftImg8bit.png", b"")
    with pytest.raises(ArchiveError, match="no gtFine"):
        preview_archive(zipfile.ZipFile(buffer))
