"""Export benchmark: our CLI against the official Cityscapes scripts and Datumaro (as CVAT runs it).

    .venv/bin/python -m bench.bench_export [--images 50] [--repeat 3]
        [--out bench/results-export.md] [--memory-images 500 | --no-memory]

One run generates one synthetic data set (2048x1024 street scenes of ~65 polygons and ~2,400
vertices each, `worker.synth`) and measures on it:

1. whole processes, each run `--repeat` times (medians): our CLI with --jobs 1 and --jobs 2, the
   official scripts (labelIds, instanceIds, color and labelTrainIds PNGs from our own
   polygons.json, so both draw the same polygons) and Datumaro's Cityscapes exporter called the
   way CVAT calls it (`bench/datumaro_export.py`, in the Datumaro venv), on all the images and on
   the first alone (the start-up cost). CPU seconds are user + sys of the process and its
   children (`os.wait4`), peak RSS the largest of them;
2. the per-image step in one process on one core: `export_image` plus the zip entries;
3. the peak RSS of our CLI's parent and pool processes on --images and on --memory-images images.

A Markdown table goes to stdout and to --out.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SCENE = dict(width=2048, height=1024, seed=0, objects=60, stuff_vertices=400)
LAUNCH_MODE = "_launch"  # internal: run and measure one command
STEP_MODE = "_step"  # internal: the per-image step, in one fresh process
RUSAGE_MODE = "_cli-rusage"  # internal: our CLI in this process, peak RSS of parent and children
OFFICIAL_MODE = "_official"  # internal: the official scripts over a folder of polygons.json
TARGETS = {
    "step": 75.0,  # images/s, one core
    "datumaro": 15.0,  # CPU ratio
    "official": 7.0,  # CPU ratio
    "speedup": 1.8,  # wall, --jobs 2 against --jobs 1
    "rss_mb": 200.0,
}


@dataclass(frozen=True)
class Run:
    cpu: float  # user + sys seconds, the process and its children
    wall: float
    rss_mb: float  # ru_maxrss of the process tree: the largest process


def run_process(cmd: list[str], log: Path) -> Run:
    """Run `cmd` to completion and measure it (wait4), from a small launcher process.

    Linux keeps the peak RSS of the process that forks across exec: a child started from this
    process (hundreds of MB once the data is made) would report at least our own peak. The
    launcher is small, so the peak RSS measured is the command's.
    """
    launcher = [sys.executable, "-m", "bench.bench_export", LAUNCH_MODE, json.dumps(cmd)]
    with open(log, "wb") as err:
        done = subprocess.run(launcher, stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
    if done.returncode:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(cmd)} exited with {done.returncode}:\n{tail}")
    return Run(**json.loads(done.stdout))


def launch(cmd: list[str]) -> int:
    """Launcher mode: run `cmd` (its output to our stderr), print its Run as JSON to stdout."""
    start = time.perf_counter()
    pid = os.posix_spawn(cmd[0], cmd, os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, 2, 1)])
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        run = Run(usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss / 1024)
        print(json.dumps(asdict(run)))
    return code


def median_run(runs: list[Run]) -> Run:
    return Run(
        statistics.median(r.cpu for r in runs),
        statistics.median(r.wall for r in runs),
        statistics.median(r.rss_mb for r in runs),
    )


# --- the data --------------------------------------------------------------------------------


def subset_manifest(manifest: dict, images: int) -> dict:
    """The first `images` images of a synthetic manifest: the same scenes as generating fewer."""
    kept = manifest["images"][:images]
    ids = {image["id"] for image in kept}
    shapes = [s for s in manifest["shapes"] if s["image"] in ids]
    return {**manifest, "images": kept, "shapes": shapes}


def describe(manifest: dict) -> str:
    shapes = manifest["shapes"]
    images = len(manifest["images"])
    polygons = sum(s["type"] == "polygon" for s in shapes)
    rectangles = sum(s["type"] == "rectangle" for s in shapes)
    vertices = sum(len(s["points"]) // 2 for s in shapes if s["type"] == "polygon")
    largest = max(len(s["points"]) // 2 for s in shapes if s["type"] == "polygon")
    kinds = f"{polygons / images:.0f} polygons + {rectangles / images:.0f} rectangles"
    masks = sum(s["type"] == "mask" for s in shapes)
    if masks:
        kinds += f" + {masks / images:.0f} masks"
    return (
        f"{images} images of {SCENE['width']}x{SCENE['height']}, per image {kinds},"
        f" {vertices / images:,.0f} polygon vertices (largest polygon {largest})"
    )


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def extract_polygons(zip_path: Path, dest: Path) -> int:
    """Our zip's polygons.json files, under the same relative paths."""
    count = 0
    with zipfile.ZipFile(zip_path) as archive:
        for name in archive.namelist():
            if name.endswith("_gtFine_polygons.json"):
                archive.extract(name, dest)
                count += 1
    return count


# --- the contenders --------------------------------------------------------------------------


def ours_cmd(manifest: Path, out: Path, jobs: int, train_ids: bool = True) -> list[str]:
    return [
        str(BIN / "cityscapes-worker"), "export", "--annotations", str(manifest),
        "--output", str(out), "--jobs", str(jobs), *(["--train-ids"] if train_ids else []),
        "--quiet",
    ]


def official_cmd(polygons_dir: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "bench.bench_export", OFFICIAL_MODE, str(polygons_dir), str(out)]


def datumaro_cmd(python: Path, manifest: Path, out: Path) -> list[str]:
    return [str(python), str(ROOT / "bench" / "datumaro_export.py"), str(manifest), str(out)]


def official_export(polygons_dir: str, out_dir: str, train_ids: bool = True) -> None:
    """The official pipeline: each polygons.json -> labelIds, instanceIds, color (and
    labelTrainIds)."""
    import numpy as np
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
    from cityscapesscripts.preparation.json2labelImg import createLabelImage
    from PIL import Image

    src = Path(polygons_dir)
    for path in sorted(src.rglob("*_gtFine_polygons.json")):
        target = Path(out_dir) / path.parent.relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        stem = path.name[: -len("polygons.json")]
        annotation = Annotation()
        annotation.fromJsonFile(str(path))
        createLabelImage(annotation, "ids").save(target / f"{stem}labelIds.png")
        if train_ids:
            createLabelImage(annotation, "trainIds").save(target / f"{stem}labelTrainIds.png")
        createLabelImage(annotation, "color").save(target / f"{stem}color.png")
        instances = np.asarray(createInstanceImage(annotation, "ids")).astype(np.uint16)
        Image.fromarray(instances).save(target / f"{stem}instanceIds.png")


def cli_with_rusage(report: str, argv: list[str]) -> int:
    """Our CLI's main() in this process; then the peak RSS of this process and of its children."""
    from worker.cli import main

    try:
        return main(argv)
    finally:
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        Path(report).write_text(json.dumps({"parent_kb": own, "child_kb": children}))


def reference_version(python: Path | str, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    return subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


# --- the per-image step ----------------------------------------------------------------------


def step_throughput(manifest_path: Path, repeat: int) -> tuple[float, float]:
    """Images/s of export_image + zip entries on one core: (by wall time, by CPU time), medians.

    Measured in a fresh process, as a pool process of the CLI would run it: the step's speed
    depends on how much freed memory the heap holds for its large buffers, and this process's
    heap is not like a worker's once the data are generated.
    """
    cmd = [sys.executable, "-m", "bench.bench_export", STEP_MODE, str(manifest_path), str(repeat)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"per-image step failed:\n{done.stderr[-2000:]}")
    rates = json.loads(done.stdout)
    return rates["wall"], rates["cpu"]


def step_process(manifest_path: str, repeat: int) -> None:
    """Step mode: pinned to one core, export every image into an in-memory zip, `repeat` times."""
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})  # before OpenCV sizes its thread pool

    from worker.cityscapes.archive import encode_entries
    from worker.cityscapes.export import ExportOptions, export_image
    from worker.cityscapes.manifest import read_manifest
    from worker.specs import build_label_map, parse_export_spec

    spec = parse_export_spec(
        {"annotations": manifest_path, "output": "unused.zip", "train_ids": True}
    )
    with tempfile.TemporaryDirectory(prefix="bench-step-") as workdir:
        manifest = read_manifest(manifest_path, workdir)
        label_map = build_label_map(spec, manifest.labels)
        work = [(image, manifest.shapes_of(i)) for i, image in enumerate(manifest.images)]
        manifest.store.close()
    options = ExportOptions(polygons_json=spec.polygons_json, train_ids=True)

    def export_all(items) -> None:
        archive = io.BytesIO()
        for image, shapes in items:
            blob, _ = encode_entries(export_image(image, shapes, label_map, options).parts)
            archive.write(blob)

    export_all(work[:1])  # warm-up
    walls, cpu_times = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        export_all(work)
        walls.append(time.perf_counter() - wall)
        cpu_times.append(time.process_time() - cpu)
    count = len(work)
    print(json.dumps({"wall": count / statistics.median(walls),
                      "cpu": count / statistics.median(cpu_times)}))


# --- the run ---------------------------------------------------------------------------------


def mark(ok: bool) -> str:
    return "yes" if ok else "**no**"


def benchmark(args: argparse.Namespace) -> str:
    from bench.refenv import DATUMARO, reference_python
    from worker.synth import make_manifest

    if args.images < 2 or args.repeat < 1:
        raise SystemExit("--images must be at least 2, --repeat at least 1")
    memory_images = args.memory_images if args.memory else 0
    datumaro_python = reference_python("datumaro", DATUMARO)
    tmp = Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        started = time.perf_counter()
        full = make_manifest(max(args.images, memory_images), **SCENE)
        data = describe(subset_manifest(full, args.images))
        manifests = {
            1: write_json(tmp / "one.json", subset_manifest(full, 1)),
            args.images: write_json(tmp / "manifest.json", subset_manifest(full, args.images)),
        }
        big = write_json(tmp / "big.json", full) if memory_images else None
        del full
        log = tmp / "stderr.log"
        print(f"data: {data}", file=sys.stderr)

        # polygons.json for the official scripts, from our own export (warms our CLI up too).
        polygons = {}
        for count, manifest in manifests.items():
            run_process(ours_cmd(manifest, tmp / "ours.zip", 1), log)
            polygons[manifest] = tmp / f"polygons-{count}"
            found = extract_polygons(tmp / "ours.zip", polygons[manifest])
            assert found == count, f"our zip holds {found} polygons.json, not {count}"

        out_zip, out_dir = tmp / "out.zip", tmp / "out"
        contenders = {
            "ours1": lambda m: ours_cmd(m, out_zip, 1),
            "ours2": lambda m: ours_cmd(m, out_zip, 2),
            "official": lambda m: official_cmd(polygons[m], out_dir),
            "datumaro": lambda m: datumaro_cmd(datumaro_python, m, out_zip),
        }

        def run(name: str, manifest: Path) -> tuple[Run, int]:
            result = run_process(contenders[name](manifest), log)
            if out_zip.exists():
                with zipfile.ZipFile(out_zip) as archive:
                    files = len(archive.namelist())
                out_zip.unlink()
            else:
                files = sum(1 for _ in out_dir.rglob("*.png"))
                shutil.rmtree(out_dir)
            return result, files

        for name in contenders:  # warm-up: imports into the page cache
            run(name, manifests[1])
        runs = {(name, count): [] for name in contenders for count in manifests}
        files = {}
        for r in range(args.repeat):
            for name in contenders:
                for count, manifest in manifests.items():
                    print(f"run {r + 1}/{args.repeat}: {name}, {count} images", file=sys.stderr)
                    result, files[name, count] = run(name, manifest)
                    runs[name, count].append(result)
        medians = {key: median_run(r) for key, r in runs.items()}

        print("per-image step", file=sys.stderr)
        step = step_throughput(manifests[args.images], args.repeat)

        memory = []
        sizes = [(args.images, manifests[args.images])] + ([(memory_images, big)] if big else [])
        for count, path in sizes:
            for jobs in (1, 2):
                print(f"memory: {count} images, --jobs {jobs}", file=sys.stderr)
                report = tmp / "rusage.json"
                cmd = [sys.executable, "-m", "bench.bench_export", RUSAGE_MODE, str(report)]
                result = run_process(cmd + ours_cmd(path, out_zip, jobs)[1:], log)
                peaks = json.loads(report.read_text())
                memory.append(
                    (count, jobs, peaks["parent_kb"] / 1024, peaks["child_kb"] / 1024, result)
                )
                out_zip.unlink()
        total = time.perf_counter() - started

        versions = {
            "datumaro": reference_version(datumaro_python, "datumaro"),
            "cityscapesScripts": reference_version(sys.executable, "cityscapesScripts"),
        }
        return report_table(args, data, medians, files, step, memory, versions, total)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


NAMES = {
    "ours1": "ours, `export --jobs 1 --train-ids` (zip)",
    "ours2": "ours, `export --jobs 2 --train-ids` (zip)",
    "official": "official scripts: 4 PNGs per polygons.json (folder)",
    "datumaro": "Datumaro `cityscapes` export as CVAT calls it (zip)",
}


def report_table(args, data, medians, files, step, memory, versions, total) -> str:
    n = args.images

    def marginal(name: str) -> float:
        """CPU seconds per image beyond the first: the cost without start-up."""
        return (medians[name, n].cpu - medians[name, 1].cpu) / (n - 1)

    command = f".venv/bin/python -m bench.bench_export --images {n} --repeat {args.repeat}"
    if not args.memory:
        command += " --no-memory"
    lines = [
        "# Export benchmark",
        "",
        f"Data: {data}. Machine: {cpu_model()}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}; Datumaro {versions['datumaro']},"
        f" cityscapesScripts {versions['cityscapesScripts']}. Command: `{command}`"
        f" ({total:.0f} s in all).",
        "",
        f"## Whole process, {n} images (median of {args.repeat})",
        "",
        "CPU = user + sys of the process and its children; peak RSS = the largest of them."
        " 1-image CPU = the same process on the first image alone (start-up, reading, writing);"
        f" CPU ms/image beyond = (CPU on {n} - CPU on 1) / {n - 1}.",
        "",
        "| contender | CPU s | wall s | peak RSS MB | 1-image CPU s | CPU ms/image beyond"
        " | files written |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, described in NAMES.items():
        run, one = medians[name, n], medians[name, 1]
        lines.append(
            f"| {described} | {run.cpu:.2f} | {run.wall:.2f} | {run.rss_mb:.0f} | {one.cpu:.2f}"
            f" | {1000 * marginal(name):.0f} | {files[name, n]} |"
        )
    ours1, ours2 = medians["ours1", n], medians["ours2", n]
    ratio_datumaro = medians["datumaro", n].cpu / ours1.cpu
    ratio_official = medians["official", n].cpu / ours1.cpu
    speedup = ours1.wall / ours2.wall
    step_wall, step_cpu = step
    lines += [
        "",
        "| measure | value | target | met |",
        "| --- | ---: | ---: | :---: |",
        f"| Datumaro CPU / ours (--jobs 1), whole process | {ratio_datumaro:.1f}x"
        f" | >= {TARGETS['datumaro']:.0f}x | {mark(ratio_datumaro >= TARGETS['datumaro'])} |",
        f"| official scripts CPU / ours (--jobs 1), whole process | {ratio_official:.1f}x"
        f" | >= {TARGETS['official']:.0f}x | {mark(ratio_official >= TARGETS['official'])} |",
        f"| Datumaro / ours (--jobs 1), CPU per image beyond the first"
        f" | {marginal('datumaro') / marginal('ours1'):.1f}x | | |",
        f"| official scripts / ours (--jobs 1), CPU per image beyond the first"
        f" | {marginal('official') / marginal('ours1'):.1f}x | | |",
        f"| wall speed-up, --jobs 2 against --jobs 1 | {speedup:.2f}x"
        f" | >= {TARGETS['speedup']}x | {mark(speedup >= TARGETS['speedup'])} |",
        "| per-image step, one process pinned to one core (export_image + in-memory zip"
        " entries), by wall"
        f" | {step_wall:.0f} images/s | >= {TARGETS['step']:.0f} images/s"
        f" | {mark(step_wall >= TARGETS['step'])} |",
        f"| the same, by CPU time | {step_cpu:.0f} images/s | | |",
        "",
        "## Peak RSS of our CLI (one run each)",
        "",
        "| images | --jobs | parent MB | largest pool process MB | CPU s | wall s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for count, jobs, parent, child, run in memory:
        child_text = f"{child:.0f}" if jobs > 1 else "-"
        lines.append(
            f"| {count} | {jobs} | {parent:.0f} | {child_text} | {run.cpu:.2f} | {run.wall:.2f} |"
        )
    peak = max(max(parent, child) for _, _, parent, child, _ in memory)
    lines += [
        "",
        f"Largest: {peak:.0f} MB (target < {TARGETS['rss_mb']:.0f} MB and flat in the number"
        f" of images): {mark(peak < TARGETS['rss_mb'])}.",
    ]
    if not args.memory:
        lines.append(f"(`--no-memory`: the {args.memory_images}-image runs were skipped.)")
    return "\n".join(lines) + "\n"


def write_report(table: str, out: str) -> None:
    """The Markdown report to `out` (relative paths from the repository root) and to stdout."""
    path = Path(out)
    if not path.is_absolute():
        path = ROOT / path
    path.write_text(table, encoding="utf-8")
    print(table)


def bench_parser(module: str, doc: str, out: str) -> argparse.ArgumentParser:
    """The options every side-by-side benchmark takes: --images, --repeat, --out."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=50, help="images in the timed runs")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each contender")
    parser.add_argument("--out", default=out, help="Markdown file to write")
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = bench_parser("bench.bench_export", __doc__, "bench/results-export.md")
    parser.add_argument("--memory-images", type=int, default=500,
                        help="images of the second memory run")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the --memory-images runs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [LAUNCH_MODE]:
        return launch(json.loads(argv[1]))
    if argv[:1] == [RUSAGE_MODE]:
        return cli_with_rusage(argv[1], argv[2:])
    if argv[:1] == [STEP_MODE]:
        step_process(argv[1], int(argv[2]))
        return 0
    if argv[:1] == [OFFICIAL_MODE]:
        official_export(argv[1], argv[2])
        return 0
    args = parse_args(argv)
    write_report(benchmark(args), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
