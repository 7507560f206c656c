"""A 100,000-image export on the cluster, end to end, on this machine.

    .venv/bin/python -m bench.bench_scale [--images 100000] [--out bench/results-scale.md]

Two `celery worker -c 1` processes, Redis as broker and as result backend (two redis-servers,
so each is measured alone) and moto's S3 server over HTTP, started as bench/bench_cluster.py
starts them, with the default settings. The annotations are `bench.bench_inputs`' manifest of
small images (64x32, three polygons each), uploaded to S3; the job exports them without photos.

Reported: plan time and the job's phases (from task events), task messages and chunks, Redis
memory (used_memory) at its peak during the job and after it, the result backend's keys and
memory, peak RSS of each worker process (main and pool child: the pool child runs the plan, the
chunks and the assembly), total wall time and its excess per image over the in-process export
of the same file (`cityscapes-worker export --jobs 2`, a process of its own). The output is then
read whole by Python's zipfile (every CRC), Info-ZIP's `unzip -t` and libarchive's `bsdtar -t`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

from bench.bench_cluster import BUCKET, Cluster, machine, vm_hwm_mb
from bench.bench_inputs import write_inputs
from tests.cityscapes.test_archive_external_readers import tool

ROOT = Path(__file__).parents[1]


class MemorySampler:
    """used_memory of the broker's and the backend's Redis, sampled every 0.2 s."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.peak = {"broker": 0, "backend": 0}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.wait(0.2):
            for name, server in (("broker", self.cluster.broker), ("backend", self.cluster.backend)):
                self.peak[name] = max(self.peak[name], server.info("memory")["used_memory"])

    def stop(self) -> dict[str, int]:
        self.stopping.set()
        self.thread.join()
        return self.peak


def readers(path: Path, entries: int) -> list[str]:
    """Each external reader's verdict on the whole archive."""
    lines = []
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        bad = archive.testzip()
    lines.append(f"- Python zipfile: {len(names):,} entries (expected {entries:,}), every CRC"
                 f" {'checked, none bad' if bad is None else 'checked: ' + bad + ' BAD'}")
    for name, package, args in (("unzip", "unzip", ["-tqq"]), ("bsdtar", "libarchive-tools", ["-tf"])):
        run = subprocess.run([tool(name, package), *args, str(path)], capture_output=True, text=True)
        listed = len(run.stdout.splitlines()) if name == "bsdtar" else None
        verdict = f"exit {run.returncode}" + (f", {listed:,} entries listed" if listed is not None else
                                              ", every entry tested")
        lines.append(f"- `{name} {' '.join(args)}`: {verdict}"
                     + (f" ({run.stderr.strip()[:200]})" if run.returncode else ""))
    return lines


def in_process_wall(manifest: Path, output: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "worker.cli", "export", "--annotations", str(manifest),
                    "--output", str(output), "--jobs", "2", "--quiet"], cwd=ROOT, check=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results-scale.md"))
    args = parser.parse_args(argv)
    cache = Path(tempfile.gettempdir()) / "cityscapes-bench-inputs"
    manifest = write_inputs(cache / f"{args.images}x64x32x3", args.images, 64, 32, 3)["manifest"]
    entries = 4 * args.images + 1
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        for key in [k for k in os.environ if k.startswith("CITYSCAPES_")]:
            del os.environ[key]  # the default settings
        from config.settings import Settings

        chunk_size = Settings.model_fields["chunk_size"].default
        cluster = Cluster(work)
        try:
            cluster.start_workers(2, chunk_size, warm_images=200)
            cluster.s3.upload_file(str(manifest), BUCKET, "scale/annotations.json")
            idle = {"broker": cluster.broker.info("memory")["used_memory"],
                    "backend": cluster.backend.info("memory")["used_memory"]}
            sampler = MemorySampler(cluster)
            run = cluster.run_job(f"s3://{BUCKET}/scale/annotations.json",
                                  f"s3://{BUCKET}/scale/out.zip", keep_output=True)
            peak = sampler.stop()
            after = {"broker": cluster.broker.info("memory")["used_memory"],
                     "backend": cluster.backend.info("memory")["used_memory"]}
            backend_keys = cluster.backend.dbsize()
            workers = [(pid, vm_hwm_mb(pid)) for pid in cluster.worker_pids()]
            zip_path = work / "out.zip"
            cluster.s3.download_file(BUCKET, "scale/out.zip", str(zip_path))
            zip_size = zip_path.stat().st_size
            checks = readers(zip_path, entries)
            zip_path.unlink()
            local = in_process_wall(manifest, work / "local.zip")
        finally:
            cluster.close()
    mib = 1 << 20
    lines = [
        "# A 100,000-image job on the cluster", "",
        f"`python -m bench.bench_scale --images {args.images}` on {machine()}: two `celery worker"
        " -c 1`, Redis broker and result backend (two redis-servers), moto's S3 server over HTTP,"
        " this client, all on this machine; default settings. Input: a manifest of"
        f" {args.images:,} images of 64x32 with three polygons each"
        f" ({manifest.stat().st_size / 1e6:.1f} MB), no photos.", "",
        "| what | figure |", "|---|---:|",
        f"| chunks (default CITYSCAPES_CHUNK_SIZE {chunk_size}) | {run.chunks:,} |",
        f"| task messages received by workers | {run.tasks_received:,} |",
        f"| plan (first chunk started - plan started) | {run.phases['plan']:.1f} s |",
        f"| chunks (first started - last done) | {run.phases['chunks']:.1f} s |",
        f"| assembly | {run.phases['assemble']:.1f} s |",
        f"| total, submit to the assembly's success | {run.wall:.1f} s |",
        f"| in-process export of the same file (`--jobs 2`) | {local:.1f} s |",
        f"| cluster over in-process, per image | {1000 * (run.wall - local) / args.images:.2f} ms |",
        f"| broker Redis used_memory: idle / peak / after | {idle['broker'] / mib:.1f} /"
        f" {peak['broker'] / mib:.1f} / {after['broker'] / mib:.1f} MiB |",
        f"| backend Redis used_memory: idle / peak / after | {idle['backend'] / mib:.1f} /"
        f" {peak['backend'] / mib:.1f} / {after['backend'] / mib:.1f} MiB |",
        f"| result backend keys after the job | {backend_keys:,} |",
        f"| broker commands / backend commands | {run.broker_cmds['total']:,} /"
        f" {run.backend_cmds['total']:,} |",
        f"| worker CPU / moto CPU / redis CPU | {run.cpu['workers']:.1f} / {run.cpu['moto']:.1f}"
        f" / {run.cpu['redis']:.1f} s |",
        f"| output | {zip_size / 1e6:,.1f} MB, {entries:,} entries |",
        "", "Peak RSS (VmHWM) of each worker process after the job (the pool child runs plan,"
        " chunks and assembly):", "",
        *[f"- pid {pid}: {mb:.0f} MB" for pid, mb in workers],
        "", "The output read whole by external readers:", "", *checks, "",
    ]
    text = "\n".join(lines)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
