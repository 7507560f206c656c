"""Cluster benchmark: the export job on real parts (redis-server, moto's S3 server, celery workers).

    .venv/bin/python -m bench.bench_cluster [--out bench/results-cluster.md]

Measures, in one run: (1) wall time of one job with 1 and with 2 worker processes (-c 1 each),
against the in-process export; (2) the assembly task's time and how many bytes it copied inside
S3 versus sent through the worker, as the job grows; (3) the cluster's extra time per image over
the in-process export on 2,000 small images, and broker commands as chunks change; (4) the peak
RSS (VmHWM) of worker processes on a 500-image job.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import redis

from bench.bench_export import ROOT
from tests.integration.conftest import free_port, redis_server_binary, start_worker, wait_until

BUCKET = "bench"
MIN_PART = 5 * 1024 * 1024


class Cluster:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.redis_port, self.s3_port = free_port(), free_port()
        self.procs = [
            subprocess.Popen([redis_server_binary(), "--port", str(self.redis_port), "--bind",
                              "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                             stdout=subprocess.DEVNULL),
            subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                              str(self.s3_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        ]
        self.env = {
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "CELERY_RESULT_BACKEND": f"redis://127.0.0.1:{self.redis_port}/1",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}",
            "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        os.environ.update(self.env)
        self.redis = redis.Redis(port=self.redis_port)
        wait_until(self.redis.ping, 20, "redis")
        self.s3 = boto3.client("s3")
        wait_until(lambda: self.s3.list_buckets() is not None, 30, "moto")
        self.s3.create_bucket(Bucket=BUCKET)
        self.workers: list[subprocess.Popen] = []

    def start_workers(self, count: int, chunk_size: int) -> None:
        self.stop_workers()
        env = {**self.env, "CITYSCAPES_CHUNK_SIZE": str(chunk_size)}
        os.environ["CITYSCAPES_CHUNK_SIZE"] = str(chunk_size)
        self._reload()
        self.workers = [start_worker(f"b{i}", env, self.workdir) for i in range(count)]
        from worker.celery import app

        wait_until(lambda: len(app.control.ping(timeout=0.5)) >= count, 60, "workers")

    def _reload(self) -> None:
        from config.celery import celery_config
        from config.settings import get_settings
        from worker import progress
        from worker.celery import app

        get_settings.cache_clear()
        progress._clients.clear()
        app.conf.update(celery_config(get_settings()))

    def stop_workers(self) -> None:
        for proc in self.workers:
            proc.terminate()
        for proc in self.workers:
            proc.wait(30)
        self.workers = []

    def worker_peak_rss_mb(self) -> float:
        """Largest VmHWM among the worker processes and their pool children."""
        pids = {p.pid for p in self.workers}
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                text = status.read_text()
            except OSError:
                continue
            ppid = int(re.search(r"PPid:\s+(\d+)", text).group(1))
            if ppid in pids:
                pids.add(int(status.parent.name))
        peaks = []
        for pid in pids:
            try:
                match = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
                peaks.append(int(match.group(1)) / 1024)
            except (OSError, AttributeError):
                pass
        return max(peaks)

    def close(self) -> None:
        self.stop_workers()
        for proc in self.procs:
            proc.terminate()


def upload(cluster: Cluster, name: str, manifest: dict) -> str:
    cluster.s3.put_object(Bucket=BUCKET, Key=f"{name}/m.json", Body=json.dumps(manifest).encode())
    return f"s3://{BUCKET}/{name}/m.json"


def run_job(cluster: Cluster, annotations: str, output: str) -> tuple[float, dict]:
    from worker import client

    start = time.perf_counter()
    job_id = client.submit_export({"annotations": annotations, "output": output})
    final = client.wait(job_id, timeout=1800, poll=0.05)
    wall = time.perf_counter() - start
    if final["state"] != "SUCCESS":
        raise RuntimeError(f"job failed: {final}")
    from celery.result import AsyncResult

    from tasks.jobs import chunk_id
    from worker.celery import app

    sizes = [AsyncResult(chunk_id(job_id, i), app=app).result["size"] for i in range(final["total"])]
    return wall, {"job_id": job_id, "chunks": final["total"], "sizes": sizes}


def assemble_seconds(cluster: Cluster, job_id: str) -> float:
    pattern = re.compile(r"cityscapes.export_assemble\[" + re.escape(job_id) + r"\] succeeded in ([0-9.]+)s")
    for log in cluster.workdir.glob("b*.log"):
        match = pattern.search(log.read_text(errors="replace"))
        if match:
            return float(match.group(1))
    return float("nan")


def local_wall(manifest: dict, workdir: Path, jobs: int) -> float:
    from worker.jobs import parse_export_spec
    from worker.local import run_export

    path = workdir / "local.json"
    path.write_text(json.dumps(manifest))
    start = time.perf_counter()
    run_export(parse_export_spec({"annotations": str(path), "output": str(workdir / "local.zip")}),
               jobs=jobs)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "bench" / "results-cluster.md"))
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--rss-images", type=int, default=500)
    args = parser.parse_args(argv)
    from worker.synth import make_manifest

    lines = ["# Cluster benchmark", "", "`python -m bench.bench_cluster`: redis-server, moto's S3"
             " server over HTTP and `celery worker -c 1` processes on this 2-core machine.", ""]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        work = Path(tmp)
        cluster = Cluster(work)
        try:
            big = make_manifest(args.images, objects=60, stuff_vertices=400)
            key = upload(cluster, "tp", big)
            walls = {}
            for count in (1, 2):
                cluster.start_workers(count, 6)
                walls[count] = run_job(cluster, key, f"s3://{BUCKET}/tp/out{count}.zip")[0]
            in_process = local_wall(big, work, 1)
            lines += ["## Throughput, 1 vs 2 workers", "",
                      "Both workers share the 2 cores with moto (S3 in Python), redis and the client.", "",
                      f"{args.images} images of 2048x1024 (~65 polygons), 6 images per chunk.", "",
                      "| run | wall s | images/s |", "| --- | ---: | ---: |",
                      f"| in-process, --jobs 1 | {in_process:.2f} | {args.images / in_process:.1f} |"]
            for count, wall in walls.items():
                lines.append(f"| cluster, {count} worker(s) | {wall:.2f} | {args.images / wall:.1f} |")
            lines += ["", f"Speed-up 2 vs 1 workers: {walls[1] / walls[2]:.2f}x.", ""]

            lines += ["## Assembly as the job grows", "", "24 images per chunk (the default), 2 workers.", "",
                      "| images | chunks | zip MB | copied in S3 MB | sent through worker MB | assemble s |",
                      "| ---: | ---: | ---: | ---: | ---: | ---: |"]
            cluster.start_workers(2, 24)
            for images in (48, 120, 240):
                manifest = make_manifest(images, seed=images, objects=60, stuff_vertices=400)
                wall, info = run_job(cluster, upload(cluster, f"as{images}", manifest),
                                     f"s3://{BUCKET}/as/out{images}.zip")
                copied = sum(s for s in info["sizes"] if s >= MIN_PART)
                total = sum(info["sizes"])
                lines.append(f"| {images} | {info['chunks']} | {total / 2**20:.1f} |"
                             f" {copied / 2**20:.1f} | {(total - copied) / 2**20:.1f} |"
                             f" {assemble_seconds(cluster, info['job_id']):.3f} |")

            small = make_manifest(2000, width=256, height=128, objects=8, stuff_vertices=20)
            key = upload(cluster, "small", small)
            lines += ["", "## Orchestration on 2,000 images of 256x128", "",
                      "| run | chunk size | wall s | extra ms/image | broker commands |",
                      "| --- | ---: | ---: | ---: | ---: |"]
            local2 = local_wall(small, work, 2)
            lines.append(f"| in-process, --jobs 2 | - | {local2:.2f} | - | - |")
            for chunk in (50, 100):
                cluster.start_workers(2, chunk)
                before = cluster.redis.info("stats")["total_commands_processed"]
                wall, _ = run_job(cluster, key, f"s3://{BUCKET}/small/out{chunk}.zip")
                commands = cluster.redis.info("stats")["total_commands_processed"] - before
                lines.append(f"| cluster, 2 workers | {chunk} | {wall:.2f} |"
                             f" {(wall - local2) / 2000 * 1000:.2f} | {commands} |")

            cluster.start_workers(2, 24)
            rss_manifest = make_manifest(args.rss_images, seed=3, objects=30, stuff_vertices=200)
            wall, _ = run_job(cluster, upload(cluster, "rss", rss_manifest), f"s3://{BUCKET}/rss/out.zip")
            lines += ["", "## Worker memory", "",
                      f"{args.rss_images} images of 2048x1024 (~35 shapes), 2 workers, 24 per chunk:"
                      f" {wall:.1f} s; largest worker VmHWM {cluster.worker_peak_rss_mb():.0f} MB."]
        finally:
            cluster.close()
    lines += ["", f"Run took {time.perf_counter() - started:.0f} s."]
    table = "\n".join(lines) + "\n"
    Path(args.out).write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
