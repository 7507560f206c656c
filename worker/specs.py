"""Job specs as the backend sends them (plain JSON), validated once at the door."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from worker.cityscapes.labels import (
    Color,
    LabelMap,
    color_hex,
    parse_color,
    parse_label_color_txt,
)
from worker.errors import ClientError, LabelMapError

# POSTed the job's status when it ends (cluster jobs; hosts allowed by the operator). The length
# is bounded apart from the pattern: a bounded repeat (\S{1,2040}) took pydantic-core ~20 ms to
# compile in each model, a tenth of an import's start-up.
NotifyUrl = Annotated[str, Field(max_length=2048, pattern=r"^https?://\S+$")]


class LabelEntry(BaseModel):
    name: str
    color: str


class ExportSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    annotations: str
    # Manifest v1, CVAT for images 1.1 XML or COCO instances JSON; "auto" tells them by content.
    annotations_format: Literal["auto", "manifest", "cvat", "coco"] = "auto"
    output: str
    images: str | None = None
    save_images: bool = False
    image_ext: str | None = Field(default=None, pattern=r"^\.[A-Za-z0-9]{1,5}$")
    label_map: Literal["source", "cityscapes"] | list[LabelEntry] = "source"
    polygons_json: bool = True
    train_ids: bool = False
    # Cityscapes panoptic PNGs and subset JSONs (worker.cityscapes.panoptic).
    panoptic: bool = False
    # Zip layout (worker.cityscapes.export.ZipLayout): "cvat" puts photos under imgsFine/,
    # "cityscapes" at the root and every image in a city folder.
    layout: Literal["cvat", "cityscapes"] = "cvat"
    default_city: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    # COCO RLE annotations marked iscrowd read as instances: CVAT's COCO export so marks masks.
    coco_rle_instances: bool = False
    job_id: str | None = None
    notify_url: NotifyUrl | None = None
    # Cluster jobs: take unchanged images from CITYSCAPES_CACHE_PREFIX when it is set.
    cache: bool = True

    @field_validator("image_ext")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value else value


class ImportSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    archive: str
    output: str
    format: Literal["manifest", "coco"] = "manifest"
    labels: list[LabelEntry] | None = None
    shapes: Literal["polygon", "mask"] = "polygon"
    job_id: str | None = None
    notify_url: NotifyUrl | None = None

    @model_validator(mode="after")
    def _labels_for_manifests(self) -> "ImportSpec":
        if self.labels is not None and self.format != "manifest":
            raise ValueError("labels (task labels to map onto) apply to manifest output only")
        return self

    def task_labels(self) -> list[dict[str, str]] | None:
        return None if self.labels is None else [e.model_dump() for e in self.labels]


def _parse(model: type[BaseModel], raw: dict[str, Any], what: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ClientError(f"{what} spec: {details}") from None


def parse_export_spec(raw: dict[str, Any]) -> ExportSpec:
    return _parse(ExportSpec, raw, "export")


def parse_import_spec(raw: dict[str, Any]) -> ImportSpec:
    return _parse(ImportSpec, raw, "import")


def build_label_map(spec: ExportSpec, task_labels: list[tuple[str, Color]]) -> LabelMap:
    """The label map an export uses, from the spec's choice and the annotations' labels."""
    if isinstance(spec.label_map, list):
        chosen = [
            (e.name, parse_color(e.color, f"label_map entry {e.name!r}")) for e in spec.label_map
        ]
        return LabelMap.from_task(chosen, "custom")
    return LabelMap.from_task(task_labels, spec.label_map)


def load_label_map_file(path: str) -> list[dict[str, str]]:
    """A label map file: a JSON list of {name, color} or label_color.txt lines."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelMapError(f"label map {path}: cannot be read ({exc})") from None
    if text.lstrip().startswith("["):
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LabelMapError(f"label map {path}: not valid JSON ({exc})") from None
        return entries
    return [
        {"name": name, "color": color_hex(color)}
        for name, color in parse_label_color_txt(text, path)
    ]
