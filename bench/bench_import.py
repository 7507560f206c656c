"""Import benchmark: our import against Datumaro's Cityscapes importer + masks_to_polygons.

    .venv/bin/python -m bench.bench_import [--images 50] [--repeat 3] [--out bench/results-import.md]

Two data sets of 2048x1024 images, each as a zip (ours) and as the extracted folder with a
leftImg8bit folder (Datumaro 1.13 wants one):
- street: synthetic scenes (bench_export.SCENE) exported by us without polygons.json, so the
  import must trace instanceIds;
- jagged: polygons.json scenes of ~200 jagged polygons of 6 to 300 vertices
  (worker.synth.jagged_polygons_json) drawn by the official scripts (json2labelImg,
  json2instanceImg), not by our exporter; only their PNGs are in the zip.
Measured on each, as whole processes (medians of --repeat, CPU = user + sys): our
`import --jobs 1` (polygons and masks) and Datumaro; then the per-image step (decode + trace +
shapes) in one process, and our peak RSS on --images and 4x as many street scenes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from bench.bench_export import BIN, ROOT, SCENE, median_run, official_export, run_process
from bench.refenv import DATUMARO, reference_python

JAGGED = {"width": 2048, "height": 1024, "segments": 200}
CONTENDERS = ("ours, `import --jobs 1` (polygons)", "ours, `import --jobs 1 --shapes mask`",
              "Datumaro `cityscapes` import + masks_to_polygons")


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


def make_official_zip(images: int, workdir: Path) -> Path:
    """Jagged scenes drawn by the official scripts (labelIds, instanceIds, color; no
    polygons.json) with their photos, in the original dataset's layout, zipped."""
    from PIL import Image

    from worker.synth import jagged_polygons_json, make_photo

    polygons, folder = workdir / "jagged-polygons", workdir / "jagged"
    for i in range(images):
        city = ("aachen", "bochum", "hamburg")[i % 3]
        stem = f"{city}/{city}_{i:06d}_000019"
        path = polygons / "gtFine" / "train" / f"{stem}_gtFine_polygons.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(jagged_polygons_json(i, **JAGGED)))
        photo = folder / "leftImg8bit" / "train" / f"{stem}_leftImg8bit.png"
        photo.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(make_photo(i, 64, 32)).resize(
            (JAGGED["width"], JAGGED["height"])).save(photo, compress_level=1)
    official_export(str(polygons), str(folder), train_ids=False)
    out = workdir / f"jagged{images}.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*.png")):
            archive.write(path, path.relative_to(folder).as_posix())
    return out


def extract_for_datumaro(archive: Path, folder: Path) -> Path:
    zipfile.ZipFile(archive).extractall(folder)
    if (folder / "imgsFine").exists():
        shutil.copytree(folder / "imgsFine" / "leftImg8bit", folder / "leftImg8bit")
    return folder


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


def ours(archive: Path, out: Path, shapes: str) -> list[str]:
    return [str(BIN / "cityscapes-worker"), "import", "--archive", str(archive),
            "--output", str(out), "--jobs", "1", "--quiet", "--shapes", shapes]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results-import.md"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    python = reference_python("datumaro", DATUMARO)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        work = Path(tmp)
        log = work / "log.txt"
        archives = {"street": make_zip(args.images, work),
                    "jagged": make_official_zip(args.images, work)}
        for data, archive in archives.items():
            folder = extract_for_datumaro(archive, work / f"extracted-{data}")
            commands = dict(zip(CONTENDERS, (
                ours(archive, work / "out.json", "polygon"), ours(archive, work / "out.json", "mask"),
                [str(python), str(ROOT / "bench" / "datumaro_import.py"), str(folder)])))
            runs: dict[str, list] = {name: [] for name in CONTENDERS}
            for _ in range(args.repeat):  # in turn, so that a slow spell hits all alike
                for name, cmd in commands.items():
                    runs[name].append(run_process(cmd, log))
            results[data] = {
                "medians": {name: median_run(r) for name, r in runs.items()},
                "ratios": statistics.median(d.cpu / o.cpu for o, d in zip(runs[CONTENDERS[0]],
                                                                         runs[CONTENDERS[2]])),
                "step": {s: step_rate(archive, args.repeat, s) for s in ("polygon", "mask")},
            }
        big = make_zip(args.images * 4, work)
        memory = run_process(ours(big, work / "out.json", "polygon"), log).rss_mb
    load = os.getloadavg()[0]
    shared = (f" The machine was shared (load average {load:.1f} on {os.cpu_count()} cores at the"
              " end): wall times and, less so, CPU times are inflated." if load > 1.5 else "")
    lines = [
        "# Import benchmark", "",
        (f"{args.images} images of 2048x1024 a data set; medians of {args.repeat} whole"
         f" processes, run in turn; `python -m bench.bench_import`"
         f" ({time.perf_counter() - started:.0f} s).{shared}"),
        ("- street: synthetic scenes exported by us without polygons.json (~65 shapes an image;"
         " instanceIds traced);"),
        (f"- jagged: {JAGGED['segments']} jagged polygons of 6 to 300 vertices an image"
         " (`jagged_polygons_json`), PNGs drawn by the official scripts."),
        "", "| data | contender | CPU s | wall s | peak RSS MB | CPU ms/image |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for data, result in results.items():
        for name, run in result["medians"].items():
            lines.append(f"| {data} | {name} | {run.cpu:.2f} | {run.wall:.2f} | {run.rss_mb:.0f} |"
                         f" {run.cpu / args.images * 1000:.0f} |")
    rows = {
        "Datumaro CPU / ours (polygons), whole process, median of pairs":
            lambda r: f"{r['ratios']:.1f}x",
        "per-image step, polygons (decode + trace + shapes), one core, images/s":
            lambda r: f"{r['step']['polygon']:.0f}",
        "per-image step, masks, one core, images/s": lambda r: f"{r['step']['mask']:.0f}",
        f"our peak RSS (polygons), {args.images} images, MB":
            lambda r: f"{r['medians'][CONTENDERS[0]].rss_mb:.0f}",
    }
    lines += ["", "| measure | street | jagged |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {cell(results['street'])} | {cell(results['jagged'])} |"
              for name, cell in rows.items()]
    lines.append(f"| our peak RSS (polygons), {args.images * 4} street images, MB | {memory:.0f} | |")
    table = "\n".join(lines) + "\n"
    Path(args.out).write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
