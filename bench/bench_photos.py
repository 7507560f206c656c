"""Phone-sized photos with brush masks: CVAT XML as a hosted CVAT writes it, to a Cityscapes zip.

    .venv/bin/python -m bench.bench_photos [--images 20] [--repeat 3] [--before REV]
        [--out bench/results-photos.md]

The data (`bench/phone_cvat.py`): photos of 3024x4032 to 5720x7150, about 12 brush masks
(`<mask rle= left= top= width= height=>`) and 4 rotated boxes each, and a tag. Whole processes of
`cityscapes-worker export --jobs 1|2`, measured as in `bench.bench_export` (CPU = user + sys of the
process and its children, peak RSS the largest), `--repeat` times each, the contenders taking
turns; medians. `--before REV` runs the same commands on a checkout of an earlier commit beside
this one (a git worktree, on PYTHONPATH), so before and after come from one run on the same file.
Also measured: the largest image (5720x7150, 40.9 MP) alone, `--jobs 1`, for the memory of one
image in one process. Every run's zip must hold the same label PNGs.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from bench.bench_export import ROOT, Run, cpu_model, median_run, run_process
from bench.phone_cvat import SIZES, write_phone_cvat

TARGETS = {"cpu_ratio": 3.0, "rss_mb": 600.0}  # against --before; one 41 MP image


def cli(annotations: Path, out: Path, jobs: int) -> list[str]:
    code = "import sys; from worker.cli import main; sys.exit(main(sys.argv[1:]))"
    # -P: not the working folder first on sys.path, so that PYTHONPATH picks the tree.
    return [sys.executable, "-P", "-c", code, "export", "--annotations", str(annotations),
            "--output", str(out), "--jobs", str(jobs), "--quiet"]


def label_pixels(path: Path) -> dict[str, bytes]:
    archive = zipfile.ZipFile(path)
    return {n: np.asarray(Image.open(io.BytesIO(archive.read(n)))).tobytes()
            for n in archive.namelist() if n.endswith(".png")}


def worktree(rev: str, where: Path) -> Path:
    subprocess.run(["git", "worktree", "add", "--detach", str(where), rev], cwd=ROOT, check=True,
                   capture_output=True)
    return where


def measure(trees: dict[str, Path], files: dict[str, Path], repeat: int, work: Path):
    """{(tree, file, jobs): median Run}; contenders take turns in every round."""
    runs: dict[tuple[str, str, int], list[Run]] = {}
    for _ in range(repeat):
        for file_name, source in files.items():
            for jobs in ((1, 2) if file_name == "all" else (1,)):
                for tree_name, tree in trees.items():
                    out = work / f"{tree_name}-{file_name}-{jobs}.zip"
                    env_path = os.environ.get("PYTHONPATH")
                    os.environ["PYTHONPATH"] = str(tree)
                    try:
                        run = run_process(cli(source, out, jobs), work / "log.txt")
                    finally:
                        if env_path is None:
                            os.environ.pop("PYTHONPATH")
                        else:
                            os.environ["PYTHONPATH"] = env_path
                    runs.setdefault((tree_name, file_name, jobs), []).append(run)
    return {key: median_run(value) for key, value in runs.items()}


def benchmark(args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory(prefix="bench-photos-") as tmp:
        work = Path(tmp)
        files = {"all": write_phone_cvat(work / "all.xml", images=args.images)}
        largest = SIZES.index(max(SIZES, key=lambda s: s[0] * s[1]))
        files["largest"] = write_phone_cvat(work / "largest.xml", images=1, seed=largest,
                                            first_size=largest)
        trees = {"after": ROOT}
        if args.before:
            trees = {"before": worktree(args.before, work / "before"), **trees}
        try:
            medians = measure(trees, files, args.repeat, work)
            outputs = {name: label_pixels(work / f"{name}-all-1.zip") for name in trees}
        finally:
            if args.before:
                subprocess.run(["git", "worktree", "remove", "--force", str(trees["before"])],
                               cwd=ROOT, check=False, capture_output=True)
        same = len({tuple(sorted(o.items())) for o in outputs.values()}) == 1
        masks = files["all"].read_text().count("<mask ")
        boxes = files["all"].read_text().count("<box ")
        size_mb = files["all"].stat().st_size / 1e6
    return report(args, medians, same, masks, boxes, size_mb)


def report(args, medians, same, masks, boxes, size_mb) -> str:
    lines = [
        "# Phone photos with brush masks (CVAT XML)",
        "",
        f"`python -m bench.bench_photos --images {args.images} --repeat {args.repeat}"
        + (f" --before {args.before}`" if args.before else "`"),
        "",
        f"{args.images} images of {SIZES[0][0]}x{SIZES[0][1]} to 5720x7150 (12.2 to 40.9 MP),"
        f" {masks} brush masks, {boxes} rotated boxes, a tag each; CVAT XML of {size_mb:.1f} MB."
        f" {cpu_model()}; medians of {args.repeat} whole processes.",
        "",
        "| tree | input | jobs | CPU s | wall s | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (tree, file_name, jobs), run in sorted(medians.items()):
        lines.append(f"| {tree} | {file_name} | {jobs} | {run.cpu:.2f} | {run.wall:.2f}"
                     f" | {run.rss_mb:.0f} |")
    lines.append("")
    after = medians[("after", "all", 1)]
    one = medians[("after", "largest", 1)]
    if args.before:
        before = medians[("before", "all", 1)]
        ratio = before.cpu / after.cpu
        lines.append(f"- CPU, `--jobs 1`, all images: {before.cpu:.2f} s before, {after.cpu:.2f}"
                     f" after: {ratio:.1f}x less (target >= {TARGETS['cpu_ratio']:.0f}x)"
                     f" {'met' if ratio >= TARGETS['cpu_ratio'] else 'MISSED'}.")
        lines.append(f"- Peak RSS, all images: {before.rss_mb:.0f} MB before, {after.rss_mb:.0f}"
                     " after.")
        lines.append(f"- Same label pixels before and after: {'yes' if same else 'NO'}.")
    lines.append(f"- One 40.9 MP image, `--jobs 1`: peak RSS {one.rss_mb:.0f} MB (target <="
                 f" {TARGETS['rss_mb']:.0f}) {'met' if one.rss_mb <= TARGETS['rss_mb'] else 'MISSED'}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before", help="an earlier commit to measure beside this tree")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results-photos.md"))
    args = parser.parse_args(argv)
    text = benchmark(args)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
