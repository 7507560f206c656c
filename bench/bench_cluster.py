"""Cluster benchmark: the export job on real parts, all started here on free ports.

    .venv/bin/python -m bench.bench_cluster [--out bench/results-cluster.md] [--repeat 3] [--quick]

Parts: a redis-server as broker, a second redis-server as result backend and progress store (so
broker traffic is counted on its own), moto's S3 server over HTTP (`python -m moto.server`) and
`celery -A worker worker -c N -Q cityscapes` processes, started as tests/integration/conftest.py
starts them. A Celery event receiver on a thread of this process records every task's received,
started and succeeded events (times, runtimes, hosts); the CPU time of each part is read from
/proc before and after each job. Jobs export annotations only (no photos). After each worker
start a small warm-up job runs, so no measured job pays for the workers' first connections.

1. Throughput: the same job on one `celery worker -c 1`, on two such workers and on one
   `celery worker -c 2`: wall time from submit to the assembly task's success (medians of
   --repeat), against `run_export(..., jobs=1|2)` in a fresh process on the same manifest; and
   where the time goes: the job's phases (from task events) and the CPU seconds of workers, moto,
   redis and this client.
2. Assembly as the job grows (20, 80, 200 images) at several chunk sizes: the assembly task's
   runtime (its task-succeeded event) and the bytes it copied inside S3 (UploadPartCopy) versus
   read and sent again through the worker, computed from the staged run sizes (each chunk's
   result "size") by the rule of S3Storage.compose.
3. Orchestration: 2,000 images of 256x128 on two workers against run_export(jobs=2): extra
   milliseconds per image, task messages (task-received events) and Redis commands on the broker
   and on the backend, at several chunk sizes.
4. Memory: peak RSS (VmHWM) of every process of two fresh workers (main and pool child) after a
   500-image job of 2048x1024.

A Markdown report goes to stdout and to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import redis

from tests.integration.conftest import (
    ROOT,
    free_port,
    redis_server_binary,
    stop_processes,
    wait_until,
)

BUCKET = "bench"
MIN_PART = 5 * 1024 * 1024  # S3's smallest part but the last: compose copies runs this large
MB = 1e6
CLK_TCK = os.sysconf("SC_CLK_TCK")
POLL = 0.05  # the client's progress poll, seconds
NOISY = 0.1  # a timed run is done again when other processes took this share of the cores
OTHER_CPU = {"local": 0.0}  # CPU seconds other processes took during the in-process runs

# The in-process reference, in a fresh process (not forked from this one and its threads).
LOCAL_RUNNER = """
import json, sys, time
from worker.export_local import run_export
from worker.specs import parse_export_spec
spec = parse_export_spec(json.loads(sys.argv[1]))
walls = []
for _ in range(int(sys.argv[3])):
    start = time.perf_counter()
    run_export(spec, jobs=int(sys.argv[2]))
    walls.append(time.perf_counter() - start)
print(json.dumps(walls))
"""


# --- /proc ------------------------------------------------------------------------------------


def process_tree(roots: set[int]) -> set[int]:
    """The root pids and all their descendants."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found = set(roots)
    while True:
        more = {pid for pid, ppid in parents.items() if ppid in found and pid not in found}
        if not more:
            return found
        found |= more


def cpu_seconds(roots: set[int]) -> float:
    """User + system seconds of these process trees (and of children they reaped)."""
    ticks = 0
    for pid in process_tree(roots):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return ticks / CLK_TCK


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_cpu() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


# --- the cluster ------------------------------------------------------------------------------


@dataclass
class JobRun:
    job_id: str
    wall: float  # submit -> the assembly task's task-succeeded event
    polled_wall: float  # submit -> SUCCESS seen by client.wait
    chunks: int
    sizes: list[int]  # staged run of each chunk, bytes
    phases: dict[str, float]
    chunk_busy: float  # sum of the chunk tasks' runtimes
    assemble: float  # the assembly task's runtime
    tasks_received: int
    per_host: dict[str, int]
    cpu: dict[str, float]
    broker_cmds: dict[str, int]
    backend_cmds: dict[str, int]
    other_cpu: float  # CPU seconds of processes not part of this benchmark, during the job


class Events:
    """A Celery event receiver on a thread: every event, in arrival order."""

    def __init__(self, app):
        self.app = app
        self.events: list[dict] = []
        self.lock = threading.Lock()
        self.receiver = None
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _on_event(self, event: dict) -> None:
        with self.lock:
            self.events.append(event)

    def _run(self) -> None:
        while not self.stopping:
            try:
                with self.app.connection_for_read() as conn:
                    self.receiver = self.app.events.Receiver(conn, handlers={"*": self._on_event})
                    self.receiver.capture(limit=None, timeout=None, wakeup=False)
            except Exception:  # noqa: BLE001 - the broker going away at the end
                if self.stopping:
                    return
                time.sleep(0.2)

    def since(self, start: int) -> list[dict]:
        with self.lock:
            return self.events[start:]

    def count(self) -> int:
        with self.lock:
            return len(self.events)

    def seen_host(self, prefix: str) -> bool:
        return any(e.get("hostname", "").startswith(prefix) for e in self.since(0))

    def stop(self) -> None:
        self.stopping = True
        if self.receiver is not None:
            self.receiver.should_stop = True


def job_events(
    events: list[dict], job_id: str, chunk_ids: set[str]
) -> tuple[list[dict], dict | None]:
    """The job's task events, and the assembly's task-succeeded event if it came. The plan and
    the assembly share the job id; which one an event is about follows from the last
    task-received before it."""
    mine = [e for e in events if e.get("uuid") == job_id or e.get("uuid") in chunk_ids]
    current, done = None, None
    for event in mine:
        if event["type"] == "task-received" and event["uuid"] == job_id:
            current = event["name"]
        elif (event["type"] == "task-succeeded" and event["uuid"] == job_id
              and current == "cityscapes.export_assemble"):
            done = event
    return mine, done


class Cluster:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.generation = 0
        self.waited = 0.0  # seconds spent waiting for other processes to go quiet
        self.discarded = 0  # timed runs done again because other processes were busy
        self.workers: list[subprocess.Popen] = []
        self.logs: list = []
        broker_port, backend_port, s3_port = free_port(), free_port(), free_port()
        self.redis_procs = [
            subprocess.Popen(
                [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(workdir)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for port in (broker_port, backend_port)
        ]
        self.moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.env = {
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{broker_port}/0",
            "CELERY_RESULT_BACKEND": f"redis://127.0.0.1:{backend_port}/0",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        os.environ.update(self.env)
        os.environ.pop("CITYSCAPES_PROGRESS_URL", None)  # progress lives on the backend's Redis
        self.broker = redis.Redis(port=broker_port)
        self.backend = redis.Redis(port=backend_port)
        wait_until(self.broker.ping, 20, "broker redis-server")
        wait_until(self.backend.ping, 20, "backend redis-server")
        self.s3 = boto3.client("s3")
        wait_until(lambda: self.s3.list_buckets() is not None, 30, "moto server")
        self.s3.create_bucket(Bucket=BUCKET)
        self._configure(chunk_size=24)
        from worker.celery import app

        self.app = app
        self.events = Events(app)
        time.sleep(0.5)  # the receiver is subscribed before any worker starts

    def _configure(self, chunk_size: int) -> None:
        """Settings are read from the environment once (cached): re-read them, as conftest does."""
        os.environ["CITYSCAPES_CHUNK_SIZE"] = str(chunk_size)
        from config.celery import celery_config
        from config.settings import get_settings
        from worker import progress
        from worker.celery import app

        get_settings.cache_clear()
        progress._clients.clear()
        app.conf.update(celery_config(get_settings()))

    def start_workers(self, count: int, chunk_size: int, concurrency: int = 1,
                      warm_images: int | None = None) -> None:
        self.stop_workers()
        self._configure(chunk_size)
        self.generation += 1
        env = {**os.environ, **self.env, "CITYSCAPES_CHUNK_SIZE": str(chunk_size)}
        names = [f"g{self.generation}w{i}" for i in range(count)]
        for name in names:
            log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop_workers
            self.logs.append(log)
            self.workers.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "worker", "worker", "-n", f"{name}@%h",
                 "-c", str(concurrency), "-Q", "cityscapes", "--without-mingle",
                 "--without-gossip", "-l", "INFO"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        wait_until(lambda: len(self.app.control.ping(timeout=0.5)) >= count, 60, "celery workers")
        for name in names:
            prefix = name + "@"
            wait_until(lambda p=prefix: self.events.seen_host(p), 20, f"events from {name}")
        # Warm-up: every pool process opens its S3 and Redis clients on a small job.
        images = warm_images or 4 * chunk_size * concurrency * count
        warm = self.upload(f"warm{self.generation}", small_manifest(images))
        self.run_job(warm, f"s3://{BUCKET}/warm/out.zip")

    def stop_workers(self) -> None:
        stop_processes(self.workers, 60)
        for log in self.logs:
            log.close()
        self.workers, self.logs = [], []

    def worker_pids(self) -> list[int]:
        return sorted(process_tree({p.pid for p in self.workers}))

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for log in sorted(self.workdir.glob("g*.log")):
            out.append(f"--- {log.name}")
            out.extend(log.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(out)

    def upload(self, name: str, manifest: dict) -> str:
        key = f"{name}/annotations.json"
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(manifest).encode())
        return f"s3://{BUCKET}/{key}"

    def _cpu(self) -> dict[str, float]:
        return {
            "workers": cpu_seconds({p.pid for p in self.workers}),
            "moto": cpu_seconds({self.moto.pid}),
            "redis": cpu_seconds({p.pid for p in self.redis_procs}),
            "client": self_cpu(),
        }

    @staticmethod
    def _commands(server: redis.Redis) -> dict[str, int]:
        stats = server.info("commandstats")
        counts = {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}
        counts["total"] = server.info("stats")["total_commands_processed"]
        return counts

    def own_cpu(self) -> float:
        return sum(self._cpu().values()) + children_cpu()

    def wait_quiet(self, max_wait: float = 120.0) -> None:
        """Wait until processes outside this benchmark use under a tenth of a core (another
        engineer's test run on the same two cores skews every number)."""
        deadline = time.monotonic() + max_wait
        started = time.monotonic()
        while True:
            machine0, own0 = machine_cpu(), self.own_cpu()
            time.sleep(0.5)
            other = machine_cpu() - machine0 - (self.own_cpu() - own0)
            if other < 0.05 or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        self.waited += time.monotonic() - started - 0.5

    def run_timed(self, annotations: str, output: str, attempts: int = 3) -> JobRun:
        """run_job once the machine is quiet; again if other processes took more than a tenth of
        the cores during the job."""
        for _ in range(attempts):
            self.wait_quiet()
            run = self.run_job(annotations, output)
            if run.other_cpu <= NOISY * run.wall * (os.cpu_count() or 1):
                return run
            self.discarded += 1
        return run

    def run_job(self, annotations: str, output: str, keep_output: bool = False) -> JobRun:
        from celery.result import AsyncResult

        from tasks.lifecycle import chunk_id
        from worker import client

        start_event = self.events.count()
        cpu0, machine0 = self._cpu(), machine_cpu()
        broker0, backend0 = self._commands(self.broker), self._commands(self.backend)
        submitted = time.time()
        job_id = client.submit_export({"annotations": annotations, "output": output})
        final = client.wait(job_id, timeout=1800, poll=POLL)
        polled = time.time() - submitted
        if final["state"] != "SUCCESS":
            raise RuntimeError(f"job {job_id} ended {final}\n{self.log_tail()}")
        chunk_ids = {chunk_id(job_id, i) for i in range(final["total"])}
        # The assembly's task-succeeded event follows SUCCESS in progress by a moment.
        deadline = time.monotonic() + 10
        events, done = job_events(self.events.since(start_event), job_id, chunk_ids)
        while done is None and time.monotonic() < deadline:
            time.sleep(0.02)
            events, done = job_events(self.events.since(start_event), job_id, chunk_ids)
        cpu1, machine1 = self._cpu(), machine_cpu()
        broker1, backend1 = self._commands(self.broker), self._commands(self.backend)
        results = [AsyncResult(chunk_id(job_id, i), app=self.app).result
                   for i in range(final["total"])]
        sizes = [r["size"] for r in results if r]  # (chunks the plan copied ran no task)
        if not keep_output:
            self.s3.delete_object(Bucket=BUCKET, Key=output.split("/", 3)[3])

        def times(kind: str, chunk: bool) -> list[float]:
            return [e["timestamp"] for e in events
                    if e["type"] == kind and (e["uuid"] != job_id) == chunk] or [float("nan")]

        chunk_done = [e for e in events if e["type"] == "task-succeeded" and e["uuid"] != job_id]
        end = done["timestamp"] if done else submitted + polled
        plan_start, assemble_start = min(times("task-started", False)), max(
            times("task-started", False))
        first_chunk, last_chunk = min(times("task-started", True)), max(
            times("task-succeeded", True))
        per_host: dict[str, int] = {}
        for event in chunk_done:
            host = event["hostname"].split("@")[0]
            per_host[host] = per_host.get(host, 0) + 1
        return JobRun(
            job_id=job_id,
            wall=end - submitted,
            polled_wall=polled,
            chunks=final["total"],
            sizes=sizes,
            phases={
                "queue": plan_start - submitted,
                "plan": first_chunk - plan_start,
                "chunks": last_chunk - first_chunk,
                "chord": assemble_start - last_chunk,
                "assemble": end - assemble_start,
            },
            chunk_busy=sum(e.get("runtime", 0.0) for e in chunk_done),
            assemble=done.get("runtime", float("nan")) if done else float("nan"),
            tasks_received=sum(1 for e in events if e["type"] == "task-received"),
            per_host=per_host,
            cpu={k: cpu1[k] - cpu0[k] for k in cpu0},
            other_cpu=max(0.0, machine1 - machine0 - sum(cpu1[k] - cpu0[k] for k in cpu0)),
            broker_cmds={k: v - broker0.get(k, 0) for k, v in broker1.items()},
            backend_cmds={k: v - backend0.get(k, 0) for k, v in backend1.items()},
        )

    def close(self) -> None:
        self.events.stop()
        self.stop_workers()
        time.sleep(0.3)
        stop_processes([self.moto, *self.redis_procs], 10)


def small_manifest(images: int) -> dict:
    from worker.synth import make_manifest

    return make_manifest(images, width=256, height=128, seed=99, objects=4, stuff_vertices=12)


def local_walls(manifest: dict, workdir: Path, jobs: int, repeat: int) -> list[float]:
    """run_export(jobs) in a fresh process on a local copy of the manifest; the CPU seconds of
    processes not part of this benchmark meanwhile are added to OTHER_CPU["local"]."""
    path = workdir / "local.json"
    path.write_text(json.dumps(manifest))
    spec = {"annotations": str(path), "output": str(workdir / "local.zip")}
    machine0, own0 = machine_cpu(), self_cpu() + children_cpu()
    done = subprocess.run(
        [sys.executable, "-c", LOCAL_RUNNER, json.dumps(spec), str(jobs), str(repeat)],
        cwd=ROOT, check=True, capture_output=True, text=True)
    OTHER_CPU["local"] += max(0.0, machine_cpu() - machine0 - (self_cpu() + children_cpu() - own0))
    return json.loads(done.stdout.strip().splitlines()[-1])


def compose_bytes(sizes: list[int]) -> tuple[int, int, int]:
    """(bytes copied inside S3, bytes read and sent again by the worker, parts) for these staged
    runs, by the rule of S3Storage.compose; the central directory, sent last, is not counted."""
    copied = through = parts = buffered = 0
    for size in sizes:
        position = 0
        if buffered:
            position = min(MIN_PART - buffered, size)
            buffered += position
            through += position
            if buffered >= MIN_PART:
                parts, buffered = parts + 1, 0
        rest = size - position
        if rest >= MIN_PART:
            copied += rest
            parts += 1
        elif rest > 0:
            buffered += rest
            through += rest
            if buffered >= MIN_PART:
                parts, buffered = parts + 1, 0
    return copied, through, parts + 1


def med(values) -> float:
    return statistics.median(values)


# --- the report -------------------------------------------------------------------------------


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |",
             "| --- | " + " | ".join("---:" for _ in header[1:]) + " |"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def machine() -> str:
    import celery
    import moto

    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return (f"{os.cpu_count()} cores ({model}), Python {platform.python_version()},"
            f" Celery {celery.__version__}, moto {moto.__version__}")


def throughput(cluster: Cluster, work: Path, cases, scene: dict, repeat: int) -> list[str]:
    from worker.synth import make_manifest

    sizes = sorted({n for n, _ in cases})
    data = {n: make_manifest(n, seed=11, **scene) for n in sizes}
    keys = {n: cluster.upload(f"tp{n}", m) for n, m in data.items()}
    local = {}
    for n, m in data.items():
        for j in (1, 2):
            cluster.wait_quiet()
            local[(n, j)] = med(local_walls(m, work, j, repeat))
    configs = [("1 worker -c 1", 1, 1), ("2 workers -c 1", 2, 1), ("1 worker -c 2", 1, 2)]
    runs: dict[tuple[str, int, int], list[JobRun]] = {
        (label, n, c): [] for label, _, _ in configs for n, c in cases}
    # Rounds: each round starts every configuration afresh, in a rotated order, so neither the
    # order nor a slow drift (moto's heap, load from elsewhere) favours one of them.
    for round_ in range(repeat):
        for chunk in sorted({c for _, c in cases}):
            for label, count, concurrency in configs[round_ % 3:] + configs[:round_ % 3]:
                cluster.start_workers(count, chunk, concurrency)
                for n, c in cases:
                    if c == chunk:
                        runs[(label, n, c)].append(
                            cluster.run_timed(keys[n], f"s3://{BUCKET}/tp/{n}.zip"))
    cluster.stop_workers()
    skew = max(abs(r.polled_wall - r.wall) for rs in runs.values() for r in rs)
    out = [
        "## 1. Throughput: 1 vs 2 worker processes", "",
        (f"2048x1024 scenes (objects={scene['objects']}, stuff_vertices={scene['stuff_vertices']});"
         f" median of {repeat} rounds, each starting every configuration afresh. '2 workers'"
         " are two `celery worker -c 1` processes; one `celery worker -c 2` is shown too."
         " Speed-up is against 1 worker -c 1 on the same job; the chunk phase is the time from"
         " the first chunk's start to the last chunk's end. (The"
         f" client, polling every {POLL} s, saw SUCCESS within {skew * 1000:.0f} ms of these"
         " walls.)"), "",
    ]
    rows, shown = [], set()
    for n, c in cases:
        for j in (1, 2):
            if (n, j) not in shown:
                shown.add((n, j))
                wall = local[(n, j)]
                rows.append([f"in-process run_export(jobs={j})", n, "-", "-", f"{wall:.2f}",
                             f"{n / wall:.1f}", "-", "-"])
        base = runs[(configs[0][0], n, c)]
        for label, _, _ in configs:
            rs = runs[(label, n, c)]
            wall = med(r.wall for r in rs)
            phase = med(r.phases["chunks"] for r in rs)
            rows.append([f"cluster, {label}", n, c, rs[0].chunks, f"{wall:.2f}", f"{n / wall:.1f}",
                         f"{med(r.wall for r in base) / wall:.2f}x",
                         f"{med(r.phases['chunks'] for r in base) / phase:.2f}x"])
    out += table(["run", "images", "chunk size", "chunks", "wall s", "images/s", "speed-up",
                  "chunk phase speed-up"], rows)
    out += ["", ("Where the time goes, seconds (medians). Phases from task events: queue ="
                 " submit -> plan starts; plan -> first chunk starts; chunks -> last chunk done;"
                 " chord -> assembly starts; assembly -> success. CPU: user + system seconds of"
                 " each part during the job; cores busy = all of it / wall."), ""]
    rows = []
    for n, c in cases:
        for label, _, _ in configs:
            rs = runs[(label, n, c)]
            phases = {k: max(0.0, med(r.phases[k] for r in rs)) for k in rs[0].phases}
            cpu = {k: med(r.cpu[k] for r in rs) for k in rs[0].cpu}
            wall = med(r.wall for r in rs)
            rows.append([label, n, c, *(f"{v:.2f}" for v in phases.values()),
                         f"{med(r.chunk_busy for r in rs):.2f}",
                         *(f"{v:.2f}" for v in cpu.values()), f"{sum(cpu.values()) / wall:.2f}",
                         f"{med(r.other_cpu for r in rs):.2f}"])
    out += table(["run", "images", "chunk size", "queue", "plan", "chunks", "chord", "assemble",
                  "chunk tasks (sum)", "CPU workers", "CPU moto", "CPU redis", "CPU client",
                  "cores busy", "CPU other processes"], rows)
    n, c = cases[-1]
    hosts = runs[(configs[1][0], n, c)][0].per_host
    out += ["", f"Chunks per worker, 2 workers, {n} images by {c} (first run): "
            + ", ".join(f"{h}: {k}" for h, k in sorted(hosts.items())) + ".", ""]
    return out


def assembly(cluster: Cluster, sizes, chunks, scene: dict) -> list[str]:
    from worker.synth import make_manifest

    keys = {n: cluster.upload(f"as{n}", make_manifest(n, seed=21, **scene)) for n in sizes}
    rows = []
    for chunk in chunks:
        cluster.start_workers(2, chunk)
        for n in sizes:
            r = cluster.run_timed(keys[n], f"s3://{BUCKET}/as/{n}.zip")
            copied, through, parts = compose_bytes(r.sizes)
            total = sum(r.sizes)
            full = r.sizes[:-1] or r.sizes
            rows.append([chunk, n, r.chunks, f"{min(full) / MB:.2f}-{max(full) / MB:.2f}",
                         f"{r.sizes[-1] / MB:.2f}", f"{total / MB:.1f}", f"{copied / MB:.1f}",
                         f"{through / MB:.1f}", parts, f"{r.assemble:.3f}",
                         f"{r.assemble * 1000 / (total / MB):.1f}", f"{r.wall:.2f}",
                         f"{r.other_cpu:.2f}"])
    cluster.stop_workers()
    out = [
        "## 2. Assembly as the job grows", "",
        ("2048x1024 scenes as above, 2 workers -c 1, one run each. A staged run of >= 5 MiB"
         f" ({MIN_PART / MB:.2f} MB) is copied inside S3 (UploadPartCopy); smaller runs are read"
         " by the assembling worker and sent again, joined into parts of >= 5 MiB. Run sizes are"
         " the chunks' results; 'assemble s' is the export_assemble task's runtime."), "",
    ]
    out += table(["chunk size", "images", "chunks", "run MB (all but last)", "last run MB",
                  "zip MB", "copied in S3 MB", "through worker MB", "parts", "assemble s",
                  "assemble ms/MB", "job wall s", "CPU other processes"], rows)
    return [*out, ""]


def orchestration(cluster: Cluster, work: Path, images: int, chunks, scene: dict,
                  repeat: int) -> list[str]:
    from worker.synth import make_manifest

    manifest = make_manifest(images, seed=31, **scene)
    key = cluster.upload("small", manifest)
    cluster.wait_quiet()
    local = med(local_walls(manifest, work, 2, repeat))
    rows = [["in-process run_export(jobs=2)", "-", "-", f"{local:.2f}", *["-"] * 7]]
    for chunk in chunks:
        cluster.start_workers(2, chunk)
        rs = [cluster.run_timed(key, f"s3://{BUCKET}/small/{chunk}.zip") for _ in range(repeat)]
        wall = med(r.wall for r in rs)
        broker = {k: med(r.broker_cmds.get(k, 0) for r in rs)
                  for k in ("total", "lpush", "publish")}
        rows.append(["cluster, 2 workers -c 1", chunk, rs[0].chunks, f"{wall:.2f}",
                     f"{(wall - local) / images * 1000:.2f}", rs[0].tasks_received,
                     f"{broker['total']:.0f}", f"{broker['lpush']:.0f}", f"{broker['publish']:.0f}",
                     f"{med(r.backend_cmds['total'] for r in rs):.0f}",
                     f"{med(r.other_cpu for r in rs):.2f}"])
    cluster.stop_workers()
    out = [
        f"## 3. Orchestration: {images:,} images of {scene['width']}x{scene['height']}", "",
        (f"objects={scene['objects']}, stuff_vertices={scene['stuff_vertices']}; median of"
         f" {repeat}. Extra ms/image = (cluster wall - in-process wall) / {images}. Task messages"
         " = the job's task-received events (1 plan + chunks + 1 assembly). Redis commands as the"
         " servers counted them during the job (INFO commandstats): broker LPUSH = messages"
         " queued, PUBLISH = task events and worker heartbeats; backend = results, chord counter"
         f" and progress, including this client's polls every {POLL} s."), "",
    ]
    out += table(["run", "chunk size", "chunks", "wall s", "extra ms/image", "task messages",
                  "broker cmds", "broker LPUSH", "broker PUBLISH", "backend cmds",
                  "CPU other processes"], rows)
    return [*out, ""]


def memory(cluster: Cluster, images: int, chunk: int, scene: dict) -> list[str]:
    from worker.synth import make_manifest

    key = cluster.upload("rss", make_manifest(images, seed=41, **scene))
    cluster.start_workers(2, chunk)
    r = cluster.run_timed(key, f"s3://{BUCKET}/rss/out.zip")
    roots = {p.pid for p in cluster.workers}
    peaks = [("main" if pid in roots else "pool child", pid, vm_hwm_mb(pid))
             for pid in cluster.worker_pids()]
    moto_peak = vm_hwm_mb(cluster.moto.pid)
    cluster.stop_workers()
    out = [
        f"## 4. Worker memory on {images} images of 2048x1024", "",
        (f"objects={scene['objects']}, stuff_vertices={scene['stuff_vertices']},"
         f" CITYSCAPES_CHUNK_SIZE={chunk}, 2 fresh workers -c 1 (after their warm-up job):"
         f" {r.chunks} chunks, job wall {r.wall:.1f} s, zip {sum(r.sizes) / MB:.0f} MB, CPU of"
         f" other processes meanwhile {r.other_cpu:.1f} s. VmHWM of"
         " each worker process, read after the job:"), "",
    ]
    out += table(["process", "pid", "VmHWM MB"], [[k, pid, f"{mb:.0f}"] for k, pid, mb in peaks])
    out += ["", (f"Largest: {max(mb for _, _, mb in peaks):.0f} MB (target < 300 MB). For"
                 " scale, moto's S3 server, which holds every object in memory, peaked at"
                 f" {moto_peak:.0f} MB."), ""]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results-cluster.md"))
    parser.add_argument("--repeat", type=int, default=3, help="runs per timed job (medians)")
    parser.add_argument("--quick", action="store_true", help="small sizes, to try the script")
    args = parser.parse_args(argv)
    quick = args.quick
    repeat = 1 if quick else args.repeat
    scene = {"objects": 60, "stuff_vertices": 400}
    small_scene = {"width": 256, "height": 128, "objects": 8, "stuff_vertices": 20}

    started, machine0, own0 = time.perf_counter(), machine_cpu(), self_cpu() + children_cpu()
    out = [
        "# Cluster benchmark", "",
        (f"`python -m bench.bench_cluster{' --quick' if quick else ''}` on {machine()}. Everything"
         " runs on this machine: two redis-servers (broker; result backend + progress), moto's S3"
         " server over HTTP (one Python process), the `celery worker` processes and this client"
         " (submits, polls progress, receives task events). Jobs export annotations only; every"
         " worker start is followed by a warm-up job. Walls run from submit to the assembly"
         " task's success event."), "",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        work = Path(tmp)
        cluster = Cluster(work)
        try:
            # (images, chunk size)
            cases = ((12, 4),) if quick else ((60, 4), (240, 4), (240, 24))
            out += throughput(cluster, work, cases, scene, repeat)
            out += assembly(cluster, (8, 24) if quick else (20, 80, 200),
                            (4, 24) if quick else (4, 16, 24), scene)
            out += orchestration(cluster, work, 200 if quick else 2000,
                                 (50,) if quick else (25, 50, 100), small_scene, repeat)
            out += memory(cluster, 40 if quick else 500, 24, scene)
        finally:
            waited, discarded = cluster.waited, cluster.discarded
            cluster.close()
    took = time.perf_counter() - started
    other = max(0.0, machine_cpu() - machine0 - (self_cpu() + children_cpu() - own0))
    out += [(f"Run took {took:.0f} s. Processes not part of this benchmark used {other:.1f} CPU"
             f" seconds meanwhile ({other / (took * (os.cpu_count() or 1)) * 100:.0f}% of the"
             " machine); the 'CPU other processes' columns say when (a noise warning for their"
             f" row); {OTHER_CPU['local']:.1f} s of it fell into the in-process runs. Timed runs"
             f" waited {waited:.0f} s in all for the machine to go quiet; timed runs done again"
             f" because other processes took over {NOISY:.0%} of the cores meanwhile: {discarded}."),
            ""]
    report = "\n".join(out)
    Path(args.out).write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
