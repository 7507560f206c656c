"""The `cityscapes-worker` command line."""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import tempfile
import threading
import warnings
from collections.abc import Sequence

from worker.errors import CityscapesWorkerError, LabelMapError

ANNOTATION_FORMATS = ("auto", "manifest", "cvat", "coco")
LABEL_MAP_LIMIT = 16 << 20  # bytes; 256 labels fit in a few KB
PANOPTIC_HELP = ("also write the Cityscapes panoptic PNGs and JSON of each subset (with"
                 " --train-ids, the trainId variant too)")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Faults of where the output goes rather than of our code: one line, exit 2.
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}


class Stopped(BaseException):
    """SIGTERM or SIGINT arrived: raised where the run is, so that every `with` cleans up."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, frame: object) -> None:
    for number in STOP_SIGNALS:  # a second signal must not cut the clean-up short
        signal.signal(number, signal.SIG_IGN)
    raise Stopped(signum)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings (Pillow's, numpy's) as one line each, like the job's own."""
    print("warning: " + " ".join(str(message).split()), file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line, like every other error (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see --help)\n")


def _jobs(args: argparse.Namespace) -> int | None:
    from worker.errors import ClientError

    if args.jobs is not None and args.jobs < 1:
        raise ClientError(f"--jobs {args.jobs}: give 1 or more processes")
    return args.jobs


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
    from worker.export_local import run_export
    from worker.specs import parse_export_spec

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
            "panoptic": args.panoptic,
            "layout": args.layout,
            "default_city": args.default_city,
            "coco_rle_instances": args.coco_rle_instances,
        }
    )
    options = {"cache": args.cache} if args.cache else {}
    return _run_local(run_export, spec, args, "objects", **options)


def _import(args: argparse.Namespace) -> int:
    from worker.import_local import run_import
    from worker.specs import parse_import_spec

    spec = parse_import_spec({
        "archive": args.archive,
        "output": args.output,
        "format": args.format,
        "shapes": args.shapes,
        **({"labels": _label_map(args.labels)} if args.labels else {}),
    })
    return _run_local(run_import, spec, args, "shapes")


def _run_local(run, spec, args: argparse.Namespace, counted: str, **options) -> int:
    """Run a job in this process with a progress bar; print warnings and the summary."""
    jobs = _jobs(args)
    update, close = _progress_bar(sys.stderr.isatty() and not args.quiet)
    try:
        result = run(spec, jobs=jobs, progress=update, **options)
    finally:
        close()
    for warning in result["warnings"][:20]:
        print(f"warning: {warning}", file=sys.stderr)
    if len(result["warnings"]) > 20:
        print(f"warning: ... {len(result['warnings']) - 20} more", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    else:
        cache = (f" ({result['images_drawn']} drawn, {result['images_cached']} from the cache)"
                 if "images_cached" in result else "")
        print(
            f"{result['output']}: {result['images']} images{cache}, {result[counted]} {counted},"
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
        "panoptic": args.panoptic,
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
    """source, cityscapes, or the entries of a label map file (read from a pipe too; bounded)."""
    if value in ("source", "cityscapes"):
        return value
    from worker.specs import load_label_map_file
    from worker.storage.local import regular_input

    with tempfile.TemporaryDirectory(prefix="cityscapes-labels-") as workdir:
        try:
            path = regular_input(value, "label map", workdir, LABEL_MAP_LIMIT)
        except CityscapesWorkerError as exc:
            raise LabelMapError(str(exc)) from None
        if path.stat().st_size > LABEL_MAP_LIMIT:
            raise LabelMapError(
                f"label map {value}: over {LABEL_MAP_LIMIT >> 20} MiB; not a label map")
        try:
            return load_label_map_file(str(path))
        except LabelMapError as exc:
            raise LabelMapError(str(exc).replace(str(path), value)) from None
        except RecursionError:
            raise LabelMapError(
                f"label map {value}: JSON nested too deep; not a label map") from None


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
    from worker.import_local import open_archive
    from worker.storage.local import atomic_output, local_path, output_path, regular_input

    output = output_path(args.output, [local_path(args.zip)])
    with tempfile.TemporaryDirectory(prefix="cityscapes-preview-") as workdir:
        path = regular_input(args.zip, "archive", workdir)
        with open_archive(args.zip, path) as archive:
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


JOBS_HELP = ("processes drawing images (default: every core); never more than the cores this"
             " process may use, nor than the images")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cityscapes-worker",
        description="Convert segmentation annotations to and from the Cityscapes format.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

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
    export.add_argument("--panoptic", action="store_true", help=PANOPTIC_HELP)
    export.add_argument("--no-polygons-json", action="store_true", help="skip polygons.json")
    export.add_argument("--cache", help="folder of images encoded by earlier exports: only images"
                        " whose inputs changed are drawn (made if missing)")
    _add_layout_options(export)
    export.add_argument("--jobs", type=int, help=JOBS_HELP)
    export.add_argument("--json", action="store_true", help="print the result as JSON")
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    export.set_defaults(handler=_export)

    imp = commands.add_parser("import", help="Cityscapes zip -> annotations, in this process")
    imp.add_argument("--archive", required=True, help="the Cityscapes zip")
    imp.add_argument("--output", required=True, help="annotations file to write")
    imp.add_argument("--format", choices=["manifest", "coco"], default="manifest")
    imp.add_argument("--shapes", choices=["polygon", "mask"], default="polygon")
    imp.add_argument("--labels", help="task labels to map onto (JSON list or label_color.txt)")
    imp.add_argument("--jobs", type=int, help=JOBS_HELP)
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
    remote.add_argument("--panoptic", action="store_true", help=PANOPTIC_HELP)
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
    here = threading.current_thread() is threading.main_thread()  # signals reach that one only
    handlers = {number: signal.signal(number, _stop) for number in STOP_SIGNALS} if here else {}
    shown = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return _main(argv)
    finally:
        warnings.showwarning = shown
        for number, handler in handlers.items():
            signal.signal(number, handler)


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except Stopped as stop:
        print(f"stopped by {signal.Signals(stop.signum).name}", file=sys.stderr)
        return 128 + stop.signum
    except CityscapesWorkerError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Whoever read our standard output stopped reading; nothing more can be said there.
        sys.stdout = open(os.devnull, "w")
        print("error: standard output closed by its reader", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in _DISK_ERRORS or os.environ.get("CITYSCAPES_WORKER_DEBUG"):
            return _unexpected(exc)
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: cannot write{where}: {exc.strerror}", file=sys.stderr)
        return 2
    except Exception as exc:
        return _unexpected(exc)


def _unexpected(exc: Exception) -> int:
    if os.environ.get("CITYSCAPES_WORKER_DEBUG"):
        raise exc
    print(f"error: unexpected {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main())
