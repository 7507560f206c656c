"""The command line's promise under abuse of its paths, pipes, pool and signals: bad input gets
exit 2 and one line naming it; no traceback, hang, partial output or lost input file."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.factories import image, manifest
from tests.worker.test_cli import SAMPLE
from tests.worker.test_hostile_inputs import cli
from worker.local_pool import cores, pool_size
from worker.synth import make_manifest

SYMLINK_REFUSED = "is a symbolic link"


@pytest.fixture(autouse=True)
def tmpdir_env(tmp_path, monkeypatch):
    """Each test's own TMPDIR (the CLI's children inherit it), checked empty at the end."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    yield tmp
    assert list(tmp.iterdir()) == [], "temporary files left behind"


@pytest.fixture
def work(tmp_path):
    """An output folder and the inputs beside it: the bundled sample, copied."""
    out = tmp_path / "out"
    out.mkdir()
    annotations = out / "manifest.json"
    annotations.write_bytes((SAMPLE / "manifest.json").read_bytes())
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by path, with its bytes (links as what they point to)."""
    return {
        str(p.relative_to(folder)): (os.readlink(p).encode() if p.is_symlink() else p.read_bytes())
        for p in sorted(folder.rglob("*")) if p.is_symlink() or p.is_file()
    }


def refused(run, code: int, *texts: str) -> str:
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == code, run.stderr
    assert "Traceback" not in run.stderr
    assert len(lines) == 1, run.stderr
    for text in texts:
        assert text in lines[0], run.stderr
    return lines[0]


def no_leftovers(folder: Path) -> None:
    hidden = [p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".part"]
    assert hidden == [], hidden


def exported_zip(folder: Path) -> Path:
    zip_path = folder / "sample.zip"
    assert cli("export", "--annotations", SAMPLE / "manifest.json", "--output", zip_path,
               "--quiet").returncode == 0
    return zip_path


# --- items 1 and 2: outputs that cannot or must not be written --------------------------------

def _existing_folder(out):
    (out / "taken").mkdir()
    return out / "taken", "is a folder"


def _trailing_slash(out):
    return f"{out}/new/", "names a folder"


def _dev_stdout(out):
    return "/dev/stdout", SYMLINK_REFUSED


def _dev_null(out):
    return "/dev/null", "not a regular file"


def _symlink_to_nothing(out):
    (out / "link.zip").symlink_to(out / "target.zip")
    return out / "link.zip", SYMLINK_REFUSED


def _symlink_to_file(out):
    (out / "kept.zip").write_bytes(b"someone's file")
    (out / "link.zip").symlink_to(out / "kept.zip")
    return out / "link.zip", SYMLINK_REFUSED


def _the_annotations(out):
    return out / "manifest.json", "is the input"


def _hard_link_to_annotations(out):
    os.link(out / "manifest.json", out / "other-name.zip")
    return out / "other-name.zip", "is the input"


def _no_folder(out):
    return out / "missing" / "o.zip", "does not exist"


def _name_too_long(out):
    return out / ("n" * 252 + ".zip"), "256 bytes"


def _read_only_folder(out):
    if os.geteuid() != 0:
        (out / "ro").mkdir(mode=0o555)
        return out / "ro" / "o.zip", "cannot be written"
    if os.access("/sys", os.W_OK) and not _sys_is_read_only():
        pytest.skip("no read-only folder for root here")
    return "/sys/o.zip", "cannot be written"


def _sys_is_read_only():
    try:
        os.close(os.open("/sys/.probe", os.O_CREAT | os.O_WRONLY))
    except OSError:
        return True
    os.unlink("/sys/.probe")
    return False


EXPORT_OUTPUTS = {
    "existing folder": _existing_folder,
    "trailing slash": _trailing_slash,
    "/dev/stdout": _dev_stdout,
    "/dev/null": _dev_null,
    "dangling symlink": _symlink_to_nothing,
    "symlink to a file": _symlink_to_file,
    "the annotations": _the_annotations,
    "a hard link to the annotations": _hard_link_to_annotations,
    "missing folder": _no_folder,
    "name over NAME_MAX": _name_too_long,
    "read-only folder": _read_only_folder,
}


@pytest.mark.parametrize("case", EXPORT_OUTPUTS)
def test_export_refuses_output(case, work):
    output, text = EXPORT_OUTPUTS[case](work)
    before = snapshot(work)
    run = cli("export", "--annotations", work / "manifest.json", "--output", output, "--jobs", "2")
    refused(run, 2, f"output {output}", text)
    assert snapshot(work) == before  # nothing replaced, nothing added
    assert not (work / "target.zip").exists()


def test_export_refuses_to_replace_a_photo_it_reads(tmp_path, work, write_manifest, write_photos):
    spec = manifest(images=[image(name="lindau/a.png")])
    photos = write_photos(spec)
    before = snapshot(photos)
    run = cli("export", "--annotations", write_manifest(spec), "--images", photos, "--save-images",
              "--output", photos / "lindau" / "a.png")
    refused(run, 2, "is the input", "a.png")
    assert snapshot(photos) == before


@pytest.mark.parametrize("command", ["import", "preview"])
def test_import_and_preview_refuse_to_replace_their_archive(command, tmp_path):
    zip_path = exported_zip(tmp_path)
    before = zip_path.read_bytes()
    source = ["--archive", zip_path] if command == "import" else [zip_path]
    run = cli(command, *source, "--output", zip_path)
    refused(run, 2, f"output {zip_path}", "is the input")
    assert zip_path.read_bytes() == before
    no_leftovers(tmp_path)


@pytest.mark.parametrize("command", ["import", "preview"])
def test_import_and_preview_refuse_a_symlinked_output(command, tmp_path):
    zip_path = exported_zip(tmp_path)
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    source = ["--archive", zip_path] if command == "import" else [zip_path]
    refused(cli(command, *source, "--output", tmp_path / "link"), 2, SYMLINK_REFUSED)
    assert not (tmp_path / "elsewhere").exists()
    no_leftovers(tmp_path)


# --- item 3: names up to the file system's limit ----------------------------------------------

@pytest.mark.parametrize("command", ["export", "import", "preview"])
def test_output_names_up_to_name_max_are_written(command, tmp_path):
    zip_path = exported_zip(tmp_path)
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    output = tmp_path / ("x" * (limit - 4) + ".out")
    args = {"export": ["--annotations", SAMPLE / "manifest.json"],
            "import": ["--archive", zip_path], "preview": [zip_path]}[command]
    jobs = ["--jobs", "2"] if command != "preview" else []
    run = cli(command, *args, "--output", output, *jobs)
    assert run.returncode == 0, run.stderr
    assert output.stat().st_size > 0
    no_leftovers(tmp_path)


# --- item 4: inputs from pipes ----------------------------------------------------------------

def run_with_pipe(args_before, data: bytes, args_after, env=None):
    """The CLI reading `data` from a pipe named /dev/fd/N, as bash's <(...) gives it."""
    read, write = os.pipe()

    def feed():
        try:
            with os.fdopen(write, "wb") as pipe:
                pipe.write(data)
        except BrokenPipeError:
            pass

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", *map(str, args_before), f"/dev/fd/{read}",
             *map(str, args_after)],
            pass_fds=(read,), capture_output=True, text=True, timeout=60,
            env={**os.environ, **(env or {})},
        )
    finally:
        os.close(read)
        feeder.join()


def test_annotations_from_a_pipe_export_as_from_a_file(tmp_path):
    data = (SAMPLE / "manifest.json").read_bytes()
    run = run_with_pipe(["export", "--annotations"], data, ["--output", tmp_path / "p.zip"])
    assert run.returncode == 0, run.stderr
    from_stdin = subprocess.run(
        [sys.executable, "-m", "worker.cli", "export", "--annotations", "/dev/stdin",
         "--output", tmp_path / "s.zip"], input=data, capture_output=True, timeout=60)
    assert from_stdin.returncode == 0, from_stdin.stderr
    from_file = cli("export", "--annotations", SAMPLE / "manifest.json",
                    "--output", tmp_path / "f.zip")
    assert from_file.returncode == 0
    assert (tmp_path / "p.zip").read_bytes() == (tmp_path / "f.zip").read_bytes()
    assert (tmp_path / "s.zip").read_bytes() == (tmp_path / "f.zip").read_bytes()


def test_archive_from_a_pipe_imports(tmp_path):
    zip_path = exported_zip(tmp_path)
    run = run_with_pipe(["import", "--archive"], zip_path.read_bytes(),
                        ["--output", tmp_path / "p.json"])
    assert run.returncode == 0, run.stderr
    assert len(json.loads((tmp_path / "p.json").read_text())["images"]) == 4


PIPE_LIMITS = {
    "annotations": (["export", "--annotations"], ["--output", "OUT"], "annotations /dev/fd/"),
    "archive": (["import", "--archive"], ["--output", "OUT"], "archive /dev/fd/"),
}


@pytest.mark.parametrize("case", PIPE_LIMITS)
def test_a_pipe_over_the_spool_limit_is_refused(case, tmp_path):
    before, after, text = PIPE_LIMITS[case]
    output = tmp_path / "o.out"
    after = [output if a == "OUT" else a for a in after]
    run = run_with_pipe(before, b"[" * 5000, after, env={"CITYSCAPES_SPOOL_LIMIT": "4096"})
    refused(run, 2, text, "4,096 bytes")
    assert not output.exists()
    no_leftovers(tmp_path)


LABEL_MAPS = {
    "endless device": ("/dev/zero", "16,777,216 bytes"),
    "JSON nested too deep": (b"[" * 5000, "nested too deep"),
    "a folder": (".", "is a folder"),
}


@pytest.mark.parametrize("case", LABEL_MAPS)
def test_bad_label_maps_are_refused_bounded(case, tmp_path):
    source, text = LABEL_MAPS[case]
    if isinstance(source, bytes):
        (tmp_path / "labels.json").write_bytes(source)
        source = tmp_path / "labels.json"
    for command in (["export", "--annotations", SAMPLE / "manifest.json", "--label-map"],
                    ["import", "--archive", exported_zip(tmp_path), "--labels"]):
        run = cli(*command, source, "--output", tmp_path / "o.out")
        refused(run, 2, f"label map {source}", text)
        assert not (tmp_path / "o.out").exists()


# --- item 5: the pool size --------------------------------------------------------------------

@pytest.mark.parametrize("jobs", ["0", "-3"])
def test_jobs_below_one_are_refused(jobs, tmp_path):
    run = cli("export", "--annotations", SAMPLE / "manifest.json", "--jobs", jobs,
              "--output", tmp_path / "o.zip")
    refused(run, 2, f"--jobs {jobs}")
    assert list(tmp_path.iterdir()) == [tmp_path / "tmp"]


def test_jobs_are_capped_at_cores_and_items():
    assert pool_size(64, 1000) == cores()
    assert pool_size(64, 3) == min(3, cores())
    assert pool_size(None, 1000) == cores()
    assert pool_size(2, 0) == 1


def test_many_jobs_run_on_the_cores(tmp_path):
    run = cli("import", "--archive", exported_zip(tmp_path), "--jobs", "64",
              "--output", tmp_path / "o.json")
    assert run.returncode == 0, run.stderr
    assert "never more than the cores" in " ".join(cli("export", "--help").stdout.split())


def test_usage_errors_are_one_line(tmp_path):
    refused(cli("export", "--annotations", "a", "--output", "b", "--jobs", "many"), 2, "--jobs")


# --- items 6 and 7: a dying pool process, signals ---------------------------------------------

@pytest.fixture(scope="module")
def big_manifest(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "big.json"
    path.write_text(json.dumps(make_manifest(40, 1024, 512, objects=40)))
    return path


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def start(args, tmp_path, **popen):
    return subprocess.Popen([sys.executable, "-m", "worker.cli", *map(str, args), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, **popen)


def wait_for_pool(process, count=2, timeout=30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pool = children(process.pid)
        if len(pool) >= count:
            return pool
        assert process.poll() is None, process.communicate()
        time.sleep(0.002)
    raise AssertionError("the pool never started")


@pytest.mark.parametrize("command", ["export", "import"])
def test_a_killed_pool_process_fails_the_run_naming_its_image(command, tmp_path, big_manifest):
    if cores() < 2:
        pytest.skip("a pool needs two cores")
    out = tmp_path / "out"
    out.mkdir()
    if command == "export":
        args = ["export", "--annotations", big_manifest]
    else:
        zip_path = tmp_path / "big.zip"
        assert cli("export", "--annotations", big_manifest, "--output", zip_path).returncode == 0
        args = ["import", "--archive", zip_path]
    process = start([*args, "--jobs", "2", "--output", out / "o.out"], tmp_path)
    pool = wait_for_pool(process)
    for pid in pool:  # hold both where they are, so the run cannot end before the kill
        os.kill(pid, signal.SIGSTOP)
    os.kill(pool[0], signal.SIGKILL)
    for pid in pool[1:]:
        os.kill(pid, signal.SIGCONT)
    stdout, stderr = process.communicate(timeout=60)  # a hang is the failure this catches
    line = refused(subprocess.CompletedProcess(args, process.returncode, stdout, stderr), 2,
                   "died", "(killed by SIGKILL)")
    assert "image '" in line or "between items" in line
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("signum, whom", [
    (signal.SIGTERM, "parent"), (signal.SIGINT, "parent"),
    (signal.SIGTERM, "group"), (signal.SIGINT, "group"),
])
def test_a_signal_stops_the_export_cleanly(signum, whom, tmp_path, big_manifest):
    out = tmp_path / "out"
    out.mkdir()
    process = start(["export", "--annotations", big_manifest, "--jobs", "2", "--output",
                     out / "o.zip"], tmp_path, start_new_session=True)
    wait_for_pool(process, count=min(2, cores()) if cores() > 1 else 0)
    if whom == "group":
        os.killpg(process.pid, signum)
    else:
        os.kill(process.pid, signum)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 128 + signum, stderr
    assert stderr.strip() == f"stopped by {signal.Signals(signum).name}"
    assert list(out.iterdir()) == []
    assert children(process.pid) == []


# --- item 8: library warnings -----------------------------------------------------------------

def test_library_warnings_are_one_line(tmp_path, write_manifest):
    spec = manifest(images=[image(name="lindau/a.png")])
    photo = Image.fromarray(np.zeros((32, 64), np.uint8), "P")
    photo.putpalette([0, 0, 0, 255, 0, 0] * 128)
    (tmp_path / "images" / "lindau").mkdir(parents=True)
    photo.save(tmp_path / "images" / "lindau" / "a.png", transparency=bytes([0, 255] * 128))
    run = cli("export", "--annotations", write_manifest(spec), "--images", tmp_path / "images",
              "--save-images", "--image-ext", ".jpg", "--output", tmp_path / "o.zip")
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines() == [
        "warning: Palette images with Transparency expressed in bytes should be converted to"
        " RGBA images"]
    names = zipfile.ZipFile(tmp_path / "o.zip").namelist()
    assert any(n.endswith("_leftImg8bit.jpg") for n in names)
