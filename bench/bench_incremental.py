"""Incremental re-export: what a re-export of an edited task costs with the run cache, in process
and on the cluster, against a full export of the same edited task.

    .venv/bin/python -m bench.bench_incremental [--images 2000] [--edited 5] [--out FILE]

Data: `worker.synth` street scenes of 2048x1024 (~65 polygons each). Edits: one shape of each of
`--edited` images moved by 3 pixels.

In process (`cityscapes-worker export --jobs 1`, processes of their own, CPU = user + sys): a full
export filling an empty cache, the edited task through that cache, and the edited task without
one; the re-export's zip must equal the full export's byte for byte and draw exactly the edited
images.

On the cluster (two `celery worker -c 1`, Redis, moto's S3 server, `CITYSCAPES_CACHE_PREFIX` set;
as bench/bench_cluster.py starts them): the same three jobs, wall from submit to the assembly's
success. Then, with photos (save_images) for the first `--photo-images` images: a full export
and the edited task again, with the photo bytes each moved through the workers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]


def cli_export(manifest: Path, output: Path, cache: Path | None) -> tuple[float, dict]:
    """CPU seconds of an export in a process of its own (bench.bench_export's launcher), and
    its result (the last line of its output, --json)."""
    from bench.bench_export import run_process

    log = output.with_suffix(".log")
    run = run_process(
        [sys.executable, "-m", "worker.cli", "export", "--annotations", str(manifest), "--output",
         str(output), "--jobs", "1", "--json", "--quiet", *(["--cache", str(cache)] if cache else [])],
        log)
    return run.cpu, json.loads(log.read_text().strip().splitlines()[-1])


def edit(manifest: dict, count: int) -> tuple[dict, list[int]]:
    edited = json.loads(json.dumps(manifest))
    step = max(1, len(edited["images"]) // count)
    images = [edited["images"][i * step]["id"] for i in range(count)]
    for image_id in images:
        shape = next(s for s in edited["shapes"] if s["image"] == image_id)
        shape["points"] = [p + 3 for p in shape["points"]]
    return edited, images


def in_process(work: Path, manifest: dict, edited: dict) -> list[str]:
    base, changed = work / "base.json", work / "edited.json"
    base.write_text(json.dumps(manifest))
    changed.write_text(json.dumps(edited))
    cache = work / "cache"
    full_cpu, full = cli_export(base, work / "full.zip", cache)
    again_cpu, again = cli_export(changed, work / "again.zip", cache)
    plain_cpu, _ = cli_export(changed, work / "plain.zip", None)
    same = (work / "again.zip").read_bytes() == (work / "plain.zip").read_bytes()
    return [
        "## In process", "",
        "| export | CPU s | images drawn | from the cache |", "|---|---:|---:|---:|",
        f"| full, filling the cache | {full_cpu:.1f} | {full['images_drawn']} | {full['images_cached']} |",
        f"| edited, through the cache | {again_cpu:.1f} | {again['images_drawn']} | {again['images_cached']} |",
        f"| edited, no cache | {plain_cpu:.1f} | {len(edited['images'])} | - |", "",
        f"Re-export / full export without a cache: {again_cpu / plain_cpu:.1%} of the CPU"
        f" (target <= 10 %); zip byte for byte the full export's: {same}.", "",
    ]


def on_cluster(work: Path, manifest: dict, edited: dict, photo_images: int) -> list[str]:
    os.environ["CITYSCAPES_CACHE_PREFIX"] = "s3://bench/cache/"
    from bench.bench_cluster import BUCKET, Cluster

    cluster = Cluster(work)
    try:
        cluster.start_workers(2, 1000, warm_images=48)
        keys = {name: cluster.upload(name, scene) for name, scene in
                (("base", manifest), ("edited", edited))}
        runs = {}
        jobs = (("full, filling the cache", "base", True, "full.zip"),
                ("edited, through the cache", "edited", True, "again.zip"),
                ("edited, no cache", "edited", False, "plain.zip"))
        from worker import client

        for label, key, use_cache, output in jobs:
            started = time.perf_counter()
            job_id = client.submit_export({"annotations": keys[key], "cache": use_cache,
                                           "output": f"s3://{BUCKET}/{output}"})
            final = client.wait(job_id, timeout=3600, poll=0.05)
            if final["state"] != "SUCCESS":
                raise SystemExit(f"{label}: {final}\n{cluster.log_tail()}")
            runs[label] = (time.perf_counter() - started, final["result"])

        def body(key: str) -> bytes:
            return cluster.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()

        same = body("again.zip") == body("plain.zip")
        photos = with_photos(cluster, manifest, photo_images)
    finally:
        cluster.close()
        os.environ.pop("CITYSCAPES_CACHE_PREFIX", None)
    rows = [f"| {label} | {wall:.1f} | {result['images_drawn']} | {result['images_cached']} |"
            for label, (wall, result) in runs.items()]
    ratio = runs["edited, through the cache"][0] / runs["edited, no cache"][0]
    moved = runs["edited, through the cache"][1]
    return ["## On the cluster (two workers)", "",
            "| job | wall s | images drawn | from the cache |", "|---|---:|---:|---:|", *rows, "",
            f"Re-export / full export without a cache: {ratio:.1%} of the wall time (target <= 20 %);"
            f" zip byte for byte the full export's: {same}. Of the re-export's runs,"
            f" {moved['bytes_copied'] / 1e6:.1f} MB were copied within S3 and"
            f" {moved['bytes_moved'] / 1e6:.1f} MB passed through workers.", "",
            *photos]


def with_photos(cluster, manifest: dict, count: int) -> list[str]:
    """The first `count` images with photos (save_images): a full export filling the cache, then
    the edited task again; how many photo bytes each moved through the workers."""
    import io

    from PIL import Image

    from bench.bench_cluster import BUCKET
    from worker import client
    from worker.synth import make_photo

    scene = {**manifest, "images": manifest["images"][:count]}
    ids = {image["id"] for image in scene["images"]}
    scene["shapes"] = [s for s in manifest["shapes"] if s["image"] in ids]
    edited, _ = edit(scene, 5)
    for image in scene["images"]:
        buffer = io.BytesIO()
        Image.fromarray(make_photo(image["id"], image["width"], image["height"])).save(buffer, "PNG")
        cluster.s3.put_object(Bucket=BUCKET, Key=f"photos/{image['name']}", Body=buffer.getvalue())
    results = {}
    for label, task in (("full, filling the cache", scene), ("edited, through the cache", edited)):
        job_id = client.submit_export({"annotations": cluster.upload(f"photos-{len(results)}", task),
                                       "images": f"s3://{BUCKET}/photos", "save_images": True,
                                       "output": f"s3://{BUCKET}/photos-{len(results)}.zip"})
        final = client.wait(job_id, timeout=3600, poll=0.05)
        if final["state"] != "SUCCESS":
            raise SystemExit(f"{label}: {final}\n{cluster.log_tail()}")
        results[label] = final["result"]
    rows = [f"| {label} | {r['images_drawn']} | {r['images_cached']} |"
            f" {r['photo_bytes_moved'] / 1e6:.1f} | {r['bytes_moved'] / 1e6:.1f} |"
            f" {r['bytes_copied'] / 1e6:.1f} |" for label, r in results.items()]
    return [f"### With photos (save_images, the first {count} images, 5 edited)", "",
            "| job | images drawn | from the cache | photo MB through workers |"
            " run MB through workers | run MB copied within S3 |",
            "|---|---:|---:|---:|---:|---:|", *rows, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--edited", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results-incremental.md"))
    parser.add_argument("--no-cluster", action="store_true")
    parser.add_argument("--no-local", action="store_true")
    parser.add_argument("--photo-images", type=int, default=240,
                        help="images exported with photos on the cluster (save_images)")
    args = parser.parse_args(argv)
    from worker.synth import make_manifest

    manifest = make_manifest(args.images, seed=17, objects=60, stuff_vertices=300)
    edited, _ = edit(manifest, args.edited)
    lines = ["# Incremental re-export", "",
             f"`python -m bench.bench_incremental --images {args.images} --edited {args.edited}`:"
             f" {args.images} street scenes of 2048x1024, one shape moved in each of"
             f" {args.edited} images.", ""]
    with tempfile.TemporaryDirectory(prefix="bench-incremental-") as tmp:
        if not args.no_local:
            lines += in_process(Path(tmp), manifest, edited)
        if not args.no_cluster:
            lines += on_cluster(Path(tmp), manifest, edited, args.photo_images)
    text = "\n".join(lines)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
