"""The `cityscapes-worker` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from worker.errors import CityscapesWorkerError

ANNOTATION_FORMATS = ("auto", "manifest", "cvat", "coco")


def _progress_bar(enabled: bool):
    """A tqdm bar on a terminal; None elsewhere (logs and pipes get the summary only)."""
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(unit="img", file=sys.stderr, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar.close


def _export(args: argparse.Namespace) -> int:
    from worker.jobs import parse_export_spec
    from worker.local import run_export

    spec = parse_export_spec(
        {
            "annotations": args.annotations,
            "annotations_format": args.format,
            "output": args.output,
            "images": args.images,
            "save_images": args.save_images,
            "image_ext": args.image_ext,
            "label_map": _label_map(args.label_map),
            "polygons_json": not args.no_polygons_json,
            "train_ids": args.train_ids,
            "layout": args.layout,
            "default_city": args.default_city,
            "coco_rle_instances": args.coco_rle_instances,
        }
    )
    return _run_local(run_export, spec, args, "objects")


def _import(args: argparse.Namespace) -> int:
    from worker.jobs import parse_import_spec
    from worker.local_import import run_import

    spec = parse_import_spec({
        "archive": args.archive,
        "output": args.output,
        "format": args.format,
        "shapes": args.shapes,
        **({"labels": _label_map(args.labels)} if args.labels else {}),
    })
    return _run_local(run_import, spec, args, "shapes")


def _run_local(run, spec, args: argparse.Namespace, counted: str) -> int:
    """Run a job in this process with a progress bar; print warnings and the summary."""
    update, close = _progress_bar(sys.stderr.isatty() and not args.quiet)
    try:
        result = run(spec, jobs=args.jobs, progress=update)
    finally:
        close()
    for warning in result["warnings"][:20]:
        print(f"warning: {warning}", file=sys.stderr)
    if len(result["warnings"]) > 20:
        print(f"warning: ... {len(result['warnings']) - 20} more", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['output']}: {result['images']} images, {result[counted]} {counted},"
            f" {len(result['warnings'])} warnings, {result['bytes']} bytes,"
            f" {result['seconds']:.2f} s"
        )
    return 0


def _submit_export(args: argparse.Namespace) -> int:
    from worker import client

    spec = {
        "annotations": args.annotations,
        "annotations_format": args.format,
        "output": args.output,
        "images": args.images,
        "save_images": args.save_images,
        "label_map": _label_map(args.label_map),
        "train_ids": args.train_ids,
        "layout": args.layout,
        "default_city": args.default_city,
        "coco_rle_instances": args.coco_rle_instances,
    }
    job_id = client.submit_export({k: v for k, v in spec.items() if v is not None},
                                  check_workers=not args.no_worker_check)
    print(job_id)
    return _follow(job_id, args.quiet) if args.wait else 0


def _submit_import(args: argparse.Namespace) -> int:
    from worker import client

    spec = {"archive": args.archive, "output": args.output, "format": args.format,
            "shapes": args.shapes}
    if args.labels:
        spec["labels"] = _label_map(args.labels)
    job_id = client.submit_import(spec, check_workers=not args.no_worker_check)
    print(job_id)
    return _follow(job_id, args.quiet) if args.wait else 0


def _label_map(value: str):
    """source, cityscapes, or the entries of a label map file."""
    if value in ("source", "cityscapes"):
        return value
    from worker.jobs import load_label_map_file

    return load_label_map_file(value)


def _follow(job_id: str, quiet: bool) -> int:
    from worker import client

    update, close = _progress_bar(sys.stderr.isatty() and not quiet)
    try:
        final = client.wait(
            job_id, on_progress=lambda s: update and s["total"] and update(s["done"], s["total"])
        )
    finally:
        close()
    print(json.dumps(final))
    return 0 if final["state"] == "SUCCESS" else 1


def _status(args: argparse.Namespace) -> int:
    from worker import client

    if args.wait:
        return _follow(args.job_id, args.quiet)
    print(json.dumps(client.status(args.job_id)))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from worker import client

    print(json.dumps(client.cancel(args.job_id)))
    return 0


def _preview(args: argparse.Namespace) -> int:
    from worker.cityscapes.preview import preview_archive
    from worker.local_import import open_archive
    from worker.storage.local import atomic_output, local_path

    output = local_path(args.output)
    if not output.parent.is_dir():
        raise CityscapesWorkerError(f"output {args.output}: folder {output.parent} does not exist")
    with open_archive(args.zip) as archive:
        preview = preview_archive(archive, args.image)
    with atomic_output(output) as out:
        out.write(preview.png)
    photo = "over its photo" if preview.item.photo else "on grey (no photo in the zip)"
    print(f"{args.output}: {preview.item.subset}/{preview.item.name} {photo},"
          f" {len(preview.classes)} classes, {preview.instances} instances")
    return 0


def _add_worker_check_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-worker-check", action="store_true",
        help="queue the job even if no running worker consumes the queue (workers start later)",
    )


def _add_coco_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--coco-rle-instances", action="store_true",
        help="read COCO RLE annotations marked iscrowd as instances (CVAT's COCO export marks"
        " every mask so)",
    )


def _add_layout_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--layout",
        choices=["cvat", "cityscapes"],
        default="cvat",
        help="cvat (default): photos under imgsFine/leftImg8bit; cityscapes: the original dataset's"
        " leftImg8bit/ at the root, every image in a city folder",
    )
    parser.add_argument(
        "--default-city",
        help="city folder for image names without one that are not <city>_<seq>_<frame>"
        " (default: 'default' with --layout cityscapes, else no folder)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cityscapes-worker",
        description="Convert segmentation annotations to and from the Cityscapes format.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    export = commands.add_parser("export", help="annotations -> Cityscapes zip, in this process")
    export.add_argument("--annotations", required=True,
                        help="manifest v1, CVAT for images 1.1 XML or COCO instances JSON")
    export.add_argument("--format", choices=ANNOTATION_FORMATS, default="auto",
                        help="of the annotations (default: told by content)")
    _add_coco_option(export)
    export.add_argument("--output", required=True, help="zip to write (appears only when whole)")
    export.add_argument("--images", help="folder holding the images, by their manifest names")
    export.add_argument("--save-images", action="store_true", help="add the photos (leftImg8bit)")
    export.add_argument("--image-ext", help="convert saved images to this extension (.png)")
    export.add_argument(
        "--label-map",
        default="source",
        help="source (default: official table when it fits), cityscapes, or a FILE"
        " (JSON list of {name, color} or label_color.txt)",
    )
    export.add_argument("--train-ids", action="store_true", help="also write labelTrainIds PNGs")
    export.add_argument("--no-polygons-json", action="store_true", help="skip polygons.json")
    _add_layout_options(export)
    export.add_argument("--jobs", type=int, default=os.cpu_count(), help="processes (all cores)")
    export.add_argument("--json", action="store_true", help="print the result as JSON")
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    export.set_defaults(handler=_export)

    imp = commands.add_parser("import", help="Cityscapes zip -> annotations, in this process")
    imp.add_argument("--archive", required=True, help="the Cityscapes zip")
    imp.add_argument("--output", required=True, help="annotations file to write")
    imp.add_argument("--format", choices=["manifest", "coco"], default="manifest")
    imp.add_argument("--shapes", choices=["polygon", "mask"], default="polygon")
    imp.add_argument("--labels", help="task labels to map onto (JSON list or label_color.txt)")
    imp.add_argument("--jobs", type=int, default=os.cpu_count(), help="processes (all cores)")
    imp.add_argument("--json", action="store_true", help="print the result as JSON")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    imp.set_defaults(handler=_import)

    look = commands.add_parser("preview", help="one image's classes and instances drawn as PNG")
    look.add_argument("zip", help="a Cityscapes zip (export or import input)")
    look.add_argument("--image", help="item name (city/name, as import names it); default: first")
    look.add_argument("--output", required=True, help="PNG to write")
    look.set_defaults(handler=_preview)

    submit = commands.add_parser("submit", help="queue a job on the cluster")
    submit_jobs = submit.add_subparsers(dest="job", required=True)
    remote = submit_jobs.add_parser("export", help="queue an export (s3:// or shared paths)")
    remote.add_argument("--annotations", required=True)
    remote.add_argument("--format", choices=ANNOTATION_FORMATS, help="of the annotations")
    _add_coco_option(remote)
    remote.add_argument("--output", required=True)
    remote.add_argument("--images")
    remote.add_argument("--save-images", action="store_true")
    remote.add_argument("--label-map", default="source")
    remote.add_argument("--train-ids", action="store_true")
    _add_layout_options(remote)
    remote.add_argument("--wait", action="store_true", help="follow progress until the job ends")
    _add_worker_check_option(remote)
    remote.add_argument("--quiet", action="store_true")
    remote.set_defaults(handler=_submit_export)
    remote_import = submit_jobs.add_parser("import", help="queue an import (zip in s3:// or shared)")
    remote_import.add_argument("--archive", required=True)
    remote_import.add_argument("--output", required=True)
    remote_import.add_argument("--format", choices=["manifest", "coco"], default="manifest")
    remote_import.add_argument("--shapes", choices=["polygon", "mask"], default="polygon")
    remote_import.add_argument("--labels")
    remote_import.add_argument("--wait", action="store_true")
    _add_worker_check_option(remote_import)
    remote_import.add_argument("--quiet", action="store_true")
    remote_import.set_defaults(handler=_submit_import)

    state = commands.add_parser("status", help="a job's state and progress, as JSON")
    state.add_argument("job_id")
    state.add_argument("--wait", action="store_true")
    state.add_argument("--quiet", action="store_true")
    state.set_defaults(handler=_status)

    stop = commands.add_parser("cancel", help="cancel a job and remove what it staged")
    stop.add_argument("job_id")
    stop.set_defaults(handler=_cancel)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except CityscapesWorkerError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("CITYSCAPES_WORKER_DEBUG"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
