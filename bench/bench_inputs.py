"""Memory and time of reading big inputs: an in-process export of N images from a manifest, a
COCO file and a CVAT file holding the same shapes, each in a process of its own.

    .venv/bin/python -m bench.bench_inputs [--images 100000] [--width 64] [--height 32]
        [--shapes 3] [--formats manifest coco cvat] [--repo PATH] [--out FILE]

Each format runs `python -m worker.cli export --annotations FILE --output OUT.zip --jobs 1 --quiet`
in a process of its own (bench.bench_export's launcher), from `--repo` (default: this checkout; give a worktree of an older commit to
measure before a change): peak RSS, wall and CPU seconds, and the time per image. The COCO file
puts its keys in the order hardest for a reader ("annotations" before "images" and
"categories"); every image has `--shapes` polygons of 3 to 8 vertices. The files are written by
this script (not by our adapters) and kept in a cache folder between runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parents[1]
LABELS = {"road": "#804080", "car": "#00008e", "person": "#dc143c"}


def polygons(rng: np.random.Generator, count: int, width: int, height: int) -> list[tuple[str, list[float]]]:
    out = []
    for k in range(count):
        sides = int(rng.integers(3, 9))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        angles = np.sort(rng.uniform(0, 2 * np.pi, sides))
        radius = rng.uniform(2, max(width, height) / 3)
        points = np.column_stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)])
        out.append((list(LABELS)[k % len(LABELS)], np.round(points, 2).ravel().tolist()))
    return out


def write_inputs(folder: Path, images: int, width: int, height: int, shapes: int,
                 formats: tuple[str, ...] = ("manifest", "coco", "cvat")) -> dict[str, Path]:
    """manifest.json, coco.json and cvat.xml (those of `formats`) of the same scene, written
    once per size."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"manifest": folder / "manifest.json", "coco": folder / "coco.json",
             "cvat": folder / "cvat.xml"}
    paths = {fmt: path for fmt, path in paths.items() if fmt in formats}
    if all(p.exists() for p in paths.values()):
        return paths
    rng = np.random.default_rng(7)
    scenes = [polygons(rng, shapes, width, height) for _ in range(images)]
    names = [f"frame_{i:07d}.png" for i in range(images)]
    ids = {name: k + 1 for k, name in enumerate(LABELS)}
    if "manifest" in paths:
        write_manifest(paths["manifest"], scenes, names, width, height)
    if "coco" in paths:
        write_coco(paths["coco"], scenes, names, ids, width, height)
    if "cvat" in paths:
        write_cvat(paths["cvat"], scenes, names, width, height)
    return paths


def write_manifest(path: Path, scenes, names: list[str], width: int, height: int) -> None:
    images = len(names)
    with open(path, "w") as out:
        out.write('{"version": 1, "labels": ' + json.dumps(
            [{"name": n, "color": c} for n, c in LABELS.items()]) + ', "images": [')
        out.write(",".join(json.dumps({"id": i + 1, "name": names[i], "width": width,
                                       "height": height}) for i in range(images)))
        out.write('], "shapes": [')
        out.write(",".join(json.dumps({"image": i + 1, "label": label, "type": "polygon",
                                       "points": points})
                           for i, scene in enumerate(scenes) for label, points in scene))
        out.write("]}")


def write_coco(path: Path, scenes, names: list[str], ids: dict[str, int], width: int,
               height: int) -> None:
    """Keys in the order hardest for a streaming reader: annotations first."""
    images = len(names)
    with open(path, "w") as out:
        out.write('{"annotations": [')
        annotations = (
            json.dumps({"id": n, "image_id": i + 1, "category_id": ids[label], "iscrowd": 0,
                        "segmentation": [points]})
            for n, (i, label, points) in enumerate(
                (i, label, points) for i, scene in enumerate(scenes) for label, points in scene)
        )
        out.write(",".join(annotations))
        out.write('], "categories": ' + json.dumps(
            [{"id": k, "name": n} for n, k in ids.items()]) + ', "images": [')
        out.write(",".join(json.dumps({"id": i + 1, "file_name": names[i], "width": width,
                                       "height": height}) for i in range(images)))
        out.write("]}")


def write_cvat(path: Path, scenes, names: list[str], width: int, height: int) -> None:
    with open(path, "w") as out:
        out.write('<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>'
                  "<meta><task><labels>")
        out.write("".join(f"<label><name>{n}</name><color>{c}</color></label>"
                          for n, c in LABELS.items()))
        out.write("</labels></task></meta>\n")
        for i, scene in enumerate(scenes):
            out.write(f'<image id="{i}" name="{names[i]}" width="{width}" height="{height}">')
            for label, points in scene:
                pairs = ";".join(f"{x:.2f},{y:.2f}" for x, y in zip(points[::2], points[1::2]))
                out.write(f'<polygon label="{label}" occluded="0" points="{pairs}" z_order="0"/>')
            out.write("</image>\n")
        out.write("</annotations>\n")


def measure(repo: Path, annotations: Path, output: Path) -> dict[str, float]:
    """One export in a process of its own (bench.bench_export's launcher: CPU, wall, peak RSS),
    from `repo`, whose worker/ comes first on sys.path."""
    from bench.bench_export import run_process

    command = (f"cd {shlex.quote(str(repo))} && exec {shlex.quote(sys.executable)} -m worker.cli"
               f" export --annotations {shlex.quote(str(annotations))}"
               f" --output {shlex.quote(str(output))} --jobs 1 --quiet")
    run = run_process(["/bin/sh", "-c", command], output.with_suffix(".log"))
    return {"rss_mb": run.rss_mb, "wall": run.wall, "cpu": run.cpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--height", type=int, default=32)
    parser.add_argument("--shapes", type=int, default=3)
    parser.add_argument("--formats", nargs="+", default=["manifest", "coco", "cvat"])
    parser.add_argument("--repo", type=Path, default=ROOT)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cityscapes-bench-inputs")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    size = f"{args.images}x{args.width}x{args.height}x{args.shapes}"
    paths = write_inputs(args.cache / size, args.images, args.width, args.height, args.shapes)
    lines = [f"{args.images:,} images of {args.width}x{args.height}, {args.shapes} polygons each;"
             f" code from {args.repo}", "",
             "| input | file MB | peak RSS MB | wall s | CPU s | ms an image (CPU) |",
             "|---|---:|---:|---:|---:|---:|"]
    for fmt in args.formats:
        output = args.cache / size / f"out-{fmt}.zip"
        figures = measure(args.repo.resolve(), paths[fmt], output)
        with zipfile.ZipFile(output) as archive:
            pngs = sum(n.endswith("_labelIds.png") for n in archive.namelist())
        if pngs != args.images:
            raise SystemExit(f"{fmt}: {pngs} labelIds PNGs for {args.images} images")
        output.unlink()
        lines.append(f"| {fmt} | {paths[fmt].stat().st_size / 1e6:,.1f} | {figures['rss_mb']:,.0f}"
                     f" | {figures['wall']:.1f} | {figures['cpu']:.1f}"
                     f" | {1000 * figures['cpu'] / args.images:.2f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
