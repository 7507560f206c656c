"""Input formats benchmark: CVAT for images 1.1 XML and COCO instances JSON to a Cityscapes zip,
our CLI against Datumaro 1.13, on the same files in one run.

    .venv/bin/python -m bench.bench_formats [--images 50] [--repeat 3]
        [--out bench/results-formats.md]

One synthetic data set (`worker.synth`: 2048x1024 street scenes with polygons, boxes and a few
masks) is written as a CVAT and a COCO file by Datumaro's own exporters (`bench/datumaro_write.py`,
in the Datumaro venv), so both tools read files a real tool wrote. On each file, whole processes,
each run `--repeat` times (medians, the contenders taking turns), measured as in
`bench.bench_export` (CPU = user + sys of the process and its children, peak RSS the largest):

- ours: `cityscapes-worker export --annotations FILE --output OUT.zip --jobs 1|2 --quiet`;
- Datumaro as its user converts: `Dataset.import_from(DIR, "cvat" | "coco_instances")`, then
  `.export(folder, "cityscapes", save_media=False)` and a zip of the folder
  (`bench/datumaro_convert.py`). Its Cityscapes exporter draws masks only, so it is run twice:
  as is, and with the polygons_to_masks and boxes_to_masks transforms that make it draw the
  polygons and boxes too.

Every run's zip must hold one labelIds PNG per image; the share of labelled pixels in the first
image's labelIds PNG is reported, so a run that drew little shows.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from bench.bench_export import (
    ROOT,
    SCENE,
    Run,
    bench_parser,
    cpu_model,
    describe,
    median_run,
    ours_cmd,
    reference_version,
    run_process,
    write_json,
    write_report,
)

# Fewer stuff vertices than the export benchmark, and masks: both formats carry them.
FORMAT_SCENE = {**SCENE, "stuff_vertices": 200, "masks": 3}
# Our name of an input -> (Datumaro's importer, the file its exporter writes, under the folder).
INPUTS = {
    "cvat": ("cvat", Path("cvat", "default.xml")),
    "coco": ("coco_instances", Path("coco", "annotations", "instances_default.json")),
}
NAMES = {
    "ours1": "ours, `export --jobs 1`",
    "ours2": "ours, `export --jobs 2`",
    "datumaro": "Datumaro, import + `cityscapes` export (masks only)",
    "datumaro_drawn": "Datumaro, import + polygons/boxes to masks + export",
}
LABEL_IDS = "_gtFine_labelIds.png"


def manifest_to_scene(manifest: dict) -> dict:
    """A manifest v1 as datumaro_write.py's scene: one subset, so that each format is one file."""
    kinds = {"polygon": "polygon", "rectangle": "bbox", "mask": "mask"}
    annotations: dict[int, list[dict]] = {image["id"]: [] for image in manifest["images"]}
    for shape in manifest["shapes"]:
        geometry = {"rle": shape["rle"]} if shape["type"] == "mask" else {"points": shape["points"]}
        annotations[shape["image"]].append({
            "type": kinds[shape["type"]],
            "label": shape["label"],
            **geometry,
            "z_order": shape.get("z_order", 0),
            "attributes": {"is_crowd": bool(shape.get("attributes", {}).get("is_crowd"))},
        })
    images = [
        {"name": image["name"], "width": image["width"], "height": image["height"],
         "annotations": annotations[image["id"]]}
        for image in manifest["images"]
    ]
    return {"labels": [label["name"] for label in manifest["labels"]], "images": images}


def write_inputs(manifest: dict, python: Path, folder: Path) -> float:
    """Datumaro writes the CVAT and COCO files of `manifest` under `folder`; returns the seconds.

    Datumaro's CVAT importer stops at an image it cannot find beside the XML (images/NAME), as
    in a CVAT export with images; empty files stand in for them (the XML gives the sizes, and
    save_media=False, so nothing reads them).
    """
    scene = write_json(folder / "scene.json", manifest_to_scene(manifest))
    started = time.perf_counter()
    subprocess.run(
        [str(python), str(ROOT / "bench" / "datumaro_write.py"), str(scene), str(folder)],
        check=True, stdout=sys.stderr,
    )
    elapsed = time.perf_counter() - started
    for image in manifest["images"]:
        placeholder = folder / INPUTS["cvat"][1].parent / "images" / image["name"]
        placeholder.parent.mkdir(parents=True, exist_ok=True)
        placeholder.touch()
    return elapsed


def check_zip(path: Path, images: int) -> float:
    """Fail unless the zip holds `images` labelIds PNGs; the first one's labelled share of pixels."""
    with zipfile.ZipFile(path) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(LABEL_IDS))
        if len(names) != images:
            raise RuntimeError(f"{path.name} holds {len(names)} labelIds PNGs, not {images}")
        first = next(n for n in names if "_000000_" in n)
        pixels = np.asarray(Image.open(io.BytesIO(archive.read(first))))
    if not pixels.any():
        raise RuntimeError(f"{path.name}: {first} is all background")
    return float(np.count_nonzero(pixels)) / pixels.size


def benchmark(args: argparse.Namespace) -> str:
    from bench.refenv import DATUMARO, reference_python
    from worker.synth import make_manifest

    if args.images < 1 or args.repeat < 1:
        raise SystemExit("--images and --repeat must be at least 1")
    python = reference_python("datumaro", DATUMARO)
    tmp = Path(tempfile.mkdtemp(prefix="bench-formats-"))
    try:
        started, load_before = time.perf_counter(), os.getloadavg()
        manifest = make_manifest(args.images, **FORMAT_SCENE)
        data = describe(manifest)
        print(f"data: {data}", file=sys.stderr)
        write_seconds = write_inputs(manifest, python, tmp)
        del manifest
        sizes = {name: (tmp / file).stat().st_size / 1e6 for name, (_, file) in INPUTS.items()}

        out_zip, log = tmp / "out.zip", tmp / "stderr.log"
        script = str(ROOT / "bench" / "datumaro_convert.py")

        def command(name: str, source: str) -> list[str]:
            importer, file = INPUTS[source]
            if name.startswith("ours"):
                return ours_cmd(tmp / file, out_zip, int(name[-1]), train_ids=False)
            drawn = ["--draw-shapes"] if name == "datumaro_drawn" else []
            return [str(python), script, importer, str(tmp / file.parts[0]), str(out_zip), *drawn]

        def run(name: str, source: str) -> tuple[Run, float]:
            result = run_process(command(name, source), log)
            labelled = check_zip(out_zip, args.images)
            out_zip.unlink()
            return result, labelled

        runs: dict[tuple[str, str], list[Run]] = {(n, s): [] for n in NAMES for s in INPUTS}
        labelled = {}
        for r in range(args.repeat + 1):  # the first round warms the page cache: not counted
            for name in NAMES:
                for source in INPUTS:
                    what = f"run {r}/{args.repeat}" if r else "warm-up"
                    print(f"{what}: {name}, {source}", file=sys.stderr)
                    result, labelled[name, source] = run(name, source)
                    if r:
                        runs[name, source].append(result)
        medians = {key: median_run(r) for key, r in runs.items()}
        total, load_after = time.perf_counter() - started, os.getloadavg()
        context = {
            "data": data,
            "sizes": sizes,
            "write_seconds": write_seconds,
            "datumaro": reference_version(python, "datumaro"),
            "total": total,
            "load": (load_before[0], load_after[0]),
        }
        return report_table(args, context, medians, labelled)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report_table(args, context: dict, medians: dict, labelled: dict) -> str:
    n, repeat = args.images, args.repeat
    sizes = context["sizes"]
    lines = [
        "# Input formats benchmark: CVAT 1.1 XML and COCO instances to a Cityscapes zip",
        "",
        f"Data: {context['data']}. Written by Datumaro"
        f" {context['datumaro']}'s `cvat` and `coco_instances` exporters"
        f" (`bench/datumaro_write.py`, {context['write_seconds']:.0f} s): CVAT XML"
        f" {sizes['cvat']:.0f} MB, COCO JSON {sizes['coco']:.0f} MB. Machine: {cpu_model()},"
        f" {os.cpu_count()} cores, Python {platform.python_version()}. Command:"
        f" `.venv/bin/python -m bench.bench_formats --images {n} --repeat {repeat}`"
        f" ({context['total']:.0f} s in all).",
        "",
        "Other work may run on this machine: the 1-minute load average was"
        f" {context['load'][0]:.1f} at the start and {context['load'][1]:.1f} at the end."
        " CPU seconds are the process's own, so they suffer less from it than wall times.",
        "",
        f"## Whole process, {n} images (median of {repeat}, after one warm-up round)",
        "",
        "CPU = user + sys of the process and its children; peak RSS = the largest of them;"
        " labelled = share of non-zero pixels in the first image's labelIds PNG. Every run's zip"
        f" held {n} labelIds PNGs.",
        "",
        "| contender | input | CPU s | wall s | peak RSS MB | labelled | CPU / ours --jobs 1 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, described in NAMES.items():
        for source in INPUTS:
            run, ours = medians[name, source], medians["ours1", source]
            lines.append(
                f"| {described} | {source} | {run.cpu:.2f} | {run.wall:.2f} | {run.rss_mb:.0f}"
                f" | {100 * labelled[name, source]:.0f}% | {run.cpu / ours.cpu:.1f}x |"
            )
    lines += [
        "",
        "Notes: Datumaro's Cityscapes exporter keeps only mask annotations: as is, it writes"
        " the masks and drops every polygon and box (the labelled column), so the ratio to"
        " compare is the one with the two transforms. Its CVAT importer needs the images beside"
        " the XML (empty files stand in; nothing reads them). COCO has no z_order, and"
        " Datumaro's COCO importer does not keep an image's annotations in file order, so it"
        " draws stuff polygons over objects: hence its different labelled share on COCO.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("bench.bench_formats", __doc__, "bench/results-formats.md")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    write_report(benchmark(args), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
