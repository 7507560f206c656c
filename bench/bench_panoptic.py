"""What `export --panoptic` costs: our CLI with and without it, against the official route (our
export, then the official createPanopticImgs over its instanceIds).

    .venv/bin/python -m bench.bench_panoptic [--images 24] [--repeat 3] [--out FILE]

Data: bench.bench_export's street scenes (2048x1024, ~65 polygons each), four subsets of them
in `val`. Each contender runs in a process of its own `--repeat` times (medians of CPU = user +
sys of the process tree, wall, peak RSS; bench.bench_export's launcher).
"""

from __future__ import annotations

import sys
import tempfile
import zipfile
from pathlib import Path

from bench.bench_export import (
    BIN,
    SCENE,
    bench_parser,
    describe,
    median_run,
    run_process,
    write_json,
    write_report,
)

OFFICIAL = ("import sys; from cityscapesscripts.preparation.createPanopticImgs import"
            " convert2panoptic; convert2panoptic(sys.argv[1], sys.argv[2], False, ['train', 'val'])")


def export_cmd(manifest: Path, out: Path, jobs: int, *flags: str) -> list[str]:
    return [str(BIN / "cityscapes-worker"), "export", "--annotations", str(manifest),
            "--output", str(out), "--jobs", str(jobs), "--quiet", *flags]


def benchmark(images: int, repeat: int) -> str:
    from worker.synth import make_manifest

    tmp = Path(tempfile.mkdtemp(prefix="bench-panoptic-"))
    manifest = make_manifest(images, **SCENE)
    path = write_json(tmp / "manifest.json", manifest)
    log = tmp / "stderr.log"
    rows = []
    for jobs in (1, 2):
        for flags in ((), ("--panoptic",), ("--panoptic", "--train-ids")):
            out = tmp / f"{jobs}{''.join(flags)}.zip"
            cmd = export_cmd(path, out, jobs, *flags)
            run = median_run([run_process(cmd, log) for _ in range(repeat)])
            rows.append((" ".join([f"ours, --jobs {jobs}", *flags]), run, out.stat().st_size))
    # The official route: createPanopticImgs over the instanceIds of our plain export.
    gt = tmp / "gt"
    with zipfile.ZipFile(tmp / "1.zip") as archive:
        for member in archive.namelist():
            if member.endswith("_instanceIds.png"):
                archive.extract(member, gt)
    official = tmp / "official"
    official.mkdir()
    cmd = [sys.executable, "-c", OFFICIAL, str(gt / "gtFine"), str(official)]
    rows.append(("official createPanopticImgs on our instanceIds",
                 median_run([run_process(cmd, log) for _ in range(repeat)]), None))
    lines = [
        "# export --panoptic: cost", "",
        f"Data: {describe(manifest)}; {repeat} runs each, medians.", "",
        "| run | CPU s | wall s | peak RSS MB | zip MB |", "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, run, size in rows:
        size = f"{size / 1e6:.1f}" if size else ""
        lines.append(f"| {name} | {run.cpu:.2f} | {run.wall:.2f} | {run.rss_mb:.0f} | {size} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("bench.bench_panoptic", __doc__, "bench/results-panoptic.md")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    write_report(benchmark(args.images, args.repeat), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
