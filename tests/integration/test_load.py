"""Load: 200 small export jobs submitted at once by 4 threads, plus one big job, on the two test
workers. Every job must end SUCCESS with the output an in-process export gives. The figures
(jobs/s, Redis memory) are printed: `pytest -s tests/integration/test_load.py` shows them."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import redis

from tests.integration.test_export_cluster import put_dataset
from worker.export_local import run_export
from worker.specs import parse_export_spec
from worker.synth import make_manifest

SMALL_JOBS, THREADS, VARIANTS = 200, 4, 4


def expected_zip(manifest: dict, tmp_path, name: str) -> bytes:
    (tmp_path / f"{name}.json").write_text(json.dumps(manifest))
    run_export(parse_export_spec({"annotations": str(tmp_path / f"{name}.json"),
                                  "output": str(tmp_path / f"{name}.zip")}), jobs=1)
    return (tmp_path / f"{name}.zip").read_bytes()


class MemoryWatch:
    """Samples Redis' used_memory in a thread until stopped."""

    def __init__(self, url: str):
        self.client = redis.Redis.from_url(url)
        self.base = self.peak = self.client.info("memory")["used_memory"]
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.client.info("memory")["used_memory"])
            time.sleep(0.05)

    def stop(self) -> int:
        self.running = False
        self.thread.join()
        return self.client.info("memory")["used_memory"]


def test_200_small_jobs_and_a_big_one_all_complete_correctly(cluster, tmp_path):
    from worker import client

    variants = []
    for n in range(VARIANTS):
        manifest = make_manifest(2, width=128, height=64, seed=100 + n, objects=4, stuff_vertices=12)
        put_dataset(cluster, f"load/v{n}", manifest, photos=False)
        variants.append(expected_zip(manifest, tmp_path, f"v{n}"))
    big = make_manifest(90, width=512, height=256, seed=99, objects=20, stuff_vertices=40)
    put_dataset(cluster, "load/big", big, photos=False)
    big_expected = expected_zip(big, tmp_path, "big")

    def spec(source: str, output: str) -> dict:
        return {"annotations": cluster.url(f"load/{source}/annotations.json"),
                "output": cluster.url(f"load/out/{output}.zip")}

    watch = MemoryWatch(cluster.env["CELERY_BROKER_URL"])
    started = time.monotonic()
    big_id = client.submit_export(spec("big", "big"))
    with ThreadPoolExecutor(THREADS) as pool:
        small_ids = list(pool.map(
            lambda n: client.submit_export(spec(f"v{n % VARIANTS}", f"small-{n:03d}")),
            range(SMALL_JOBS)))
    submitted = time.monotonic() - started
    finals = {job_id: client.wait(job_id, timeout=600) for job_id in [big_id, *small_ids]}
    took = time.monotonic() - started
    after = watch.stop()
    print(f"\n{SMALL_JOBS + 1} jobs: submitted in {submitted:.2f} s, all ended after {took:.1f} s "
          f"({(SMALL_JOBS + 1) / took:.1f} jobs/s); Redis used_memory {watch.base / 2**20:.1f} MiB "
          f"before, {watch.peak / 2**20:.1f} MiB peak, {after / 2**20:.1f} MiB after")

    assert len(set(small_ids)) == SMALL_JOBS
    assert all(f["state"] == "SUCCESS" for f in finals.values()), [
        f for f in finals.values() if f["state"] != "SUCCESS"][:3]
    for n in range(SMALL_JOBS):
        assert cluster.get(f"load/out/small-{n:03d}.zip") == variants[n % VARIANTS], n
    assert cluster.get("load/out/big.zip") == big_expected
    assert finals[big_id]["images_done"] == 90
    assert cluster.keys(".cityscapes-staging/") == []
