"""Import benchmark: our import against Datumaro's Cityscapes importer + masks_to_polygons.

    .venv/bin/python -m bench.bench_import [--images 30] [--repeat 3] [--out bench/results-import.md]

One synthetic data set (2048x1024 scenes, bench_export.SCENE) is exported by us without
polygons.json (so the import must trace instanceIds) and extracted, with the leftImg8bit folder
Datumaro 1.13 wants added. Measured, as whole processes (medians of --repeat, CPU = user + sys):
our `import --jobs 1` (polygons and masks) and Datumaro; then the per-image step (decode + trace +
shapes) in one process, and our peak RSS on --images and 4x as many.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from bench.bench_export import BIN, ROOT, SCENE, median_run, run_process
from bench.refenv import DATUMARO, reference_python


def make_zip(images: int, workdir: Path) -> Path:
    from PIL import Image

    from worker.export_local import run_export
    from worker.specs import parse_export_spec
    from worker.synth import make_manifest, make_photo

    manifest = make_manifest(images, **SCENE)
    photos = workdir / f"photos{images}"
    for image in manifest["images"]:
        path = photos / image["name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(make_photo(image["id"], 64, 32)).resize(
            (image["width"], image["height"])).save(path, compress_level=1)
    (workdir / "m.json").write_text(json.dumps(manifest))
    out = workdir / f"cityscapes{images}.zip"
    run_export(parse_export_spec({"annotations": str(workdir / "m.json"), "output": str(out),
                                  "images": str(photos), "save_images": True,
                                  "polygons_json": False}))
    return out


def step_rate(archive_path: Path, repeat: int, shapes: str) -> float:
    """Images/s of decode + trace + shapes, one process, one core."""
    from worker.cityscapes.importer import document_records, import_item
    from worker.cityscapes.reader import archive_label_map, read_member, scan_archive

    archive = zipfile.ZipFile(archive_path)
    index = scan_archive(archive)
    label_map = archive_label_map(archive, index.label_file)
    work = [(item, {k: read_member(archive, m, 1 << 30) for k, m in item.members.items()
                    if k != "color"}) for item in index.items]
    rates = []
    for _ in range(repeat):
        start = time.process_time()
        for number, (item, files) in enumerate(work, 1):
            document_records(import_item(item, files, label_map, shapes), number, "manifest")
        rates.append(len(work) / (time.process_time() - start))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results-import.md"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    python = reference_python("datumaro", DATUMARO)
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        work = Path(tmp)
        archive = make_zip(args.images, work)
        folder = work / "extracted"
        zipfile.ZipFile(archive).extractall(folder)
        shutil.copytree(folder / "imgsFine" / "leftImg8bit", folder / "leftImg8bit")
        log = work / "log.txt"
        ours = lambda shapes: [str(BIN / "cityscapes-worker"), "import", "--archive", str(archive),
                               "--output", str(work / "out.json"), "--jobs", "1", "--quiet",
                               "--shapes", shapes]
        rows = {
            "ours, `import --jobs 1` (polygons)": ours("polygon"),
            "ours, `import --jobs 1 --shapes mask`": ours("mask"),
            "Datumaro `cityscapes` import + masks_to_polygons": [
                str(python), str(ROOT / "bench" / "datumaro_import.py"), str(folder)],
        }
        medians = {name: median_run([run_process(cmd, log) for _ in range(args.repeat)])
                   for name, cmd in rows.items()}
        step = {shapes: step_rate(archive, args.repeat, shapes) for shapes in ("polygon", "mask")}
        big = make_zip(args.images * 4, work)
        memory = {
            args.images: medians["ours, `import --jobs 1` (polygons)"].rss_mb,
            args.images * 4: run_process(ours("polygon")[:3] + [str(big)] + ours("polygon")[4:], log).rss_mb,
        }
    ours_cpu = medians["ours, `import --jobs 1` (polygons)"].cpu
    datumaro_cpu = medians["Datumaro `cityscapes` import + masks_to_polygons"].cpu
    lines = [
        "# Import benchmark", "",
        f"Data: {args.images} images of {SCENE['width']}x{SCENE['height']} exported by us without"
        f" polygons.json (~65 shapes per image; instanceIds traced). Medians of {args.repeat}"
        f" whole processes; `python -m bench.bench_import` ({time.perf_counter() - started:.0f} s).",
        "", "| contender | CPU s | wall s | peak RSS MB | CPU ms/image |", "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, run in medians.items():
        lines.append(f"| {name} | {run.cpu:.2f} | {run.wall:.2f} | {run.rss_mb:.0f} |"
                     f" {run.cpu / args.images * 1000:.0f} |")
    lines += [
        "", "| measure | value |", "| --- | ---: |",
        f"| Datumaro CPU / ours (polygons), whole process | {datumaro_cpu / ours_cpu:.1f}x |",
        f"| per-image step, polygons (decode + trace + shapes), one core | {step['polygon']:.0f} images/s (target 40) |",
        f"| per-image step, masks, one core | {step['mask']:.0f} images/s |",
        f"| our peak RSS, {args.images} images / {args.images * 4} images | {memory[args.images]:.0f} MB / {memory[args.images * 4]:.0f} MB |",
    ]
    table = "\n".join(lines) + "\n"
    Path(args.out).write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
