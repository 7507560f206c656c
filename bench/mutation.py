"""Mutation testing of the format core: do the fast unit tests notice when the code is wrong?

    .venv/bin/python -m bench.mutation [--modules rle export trace ...] [--max-children 1]
                                       [--out bench/results-mutation.md]

mutmut (installed here on first use, into the project's venv: it is a tool of this script, not
of the product) changes `worker/cityscapes/<module>.py` one small edit at a time (an operator,
a constant, a dropped argument) and runs `tests/cityscapes/` against each mutant (only the tests
that call the mutated function, as mutmut records them on a clean run). A mutant the tests pass
is a survivor: either a missing assertion, or an edit that changes nothing (an equivalent
mutant, argued case by case in bench/mutation-equivalents.txt). The score is killed (or timed
out) over all.

mutmut reads its settings from the current directory and writes `mutants/` there, so each module
runs in a copy of the project under a temporary directory, kept after the run: the survivors'
edits are written to `<that directory>/survivors.diff`, and `mutmut show NAME` works there.
The external-reader test (unzip, 7z, bsdtar on a 4.5 GiB archive, ~70 s) is left out.
About 1 to 4 minutes a module with one child; not part of CI.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).parents[1]
MODULES = ("export", "trace", "rle", "png", "archive", "labels", "importer")
TARGET = 0.90
COPIED = ("worker", "tasks", "config", "examples", "tests", "pyproject.toml")
SLOW_TESTS = "tests/cityscapes/test_archive_external_readers.py"


def mutmut() -> Path:
    tool = Path(sys.executable).parent / "mutmut"
    if not tool.exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "mutmut>=3.8"], check=True)
    return tool


def project_copy(module: str) -> Path:
    """A copy of the project for one module's run, with mutmut's settings beside it."""
    workdir = Path(tempfile.mkdtemp(prefix=f"cityscapes-mutation-{module}-"))
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, workdir / name, ignore=ignore)
        else:
            shutil.copy2(source, workdir / name)
    (workdir / "setup.cfg").write_text(
        "[mutmut]\n"
        f"source_paths = worker/cityscapes/{module}.py\n"
        "also_copy = worker\n    tasks\n    config\n    examples\n"
        "pytest_add_cli_args_test_selection = tests/cityscapes/\n"
        f"pytest_add_cli_args = --ignore={SLOW_TESTS}\n    -p\n    no:cacheprovider\n"
    )
    return workdir


def run_module(tool: Path, module: str, max_children: int) -> tuple[Counter, list[str], Path]:
    """mutmut's verdicts for one module, counted; the survivors' names; the directory it ran in."""
    workdir = project_copy(module)
    subprocess.run([str(tool), "run", "--max-children", str(max_children)], cwd=workdir,
                   stdout=subprocess.DEVNULL, check=False)
    listing = subprocess.run([str(tool), "results", "--all", "true"], cwd=workdir,
                             capture_output=True, text=True).stdout
    verdicts = Counter(m[1] for m in re.finditer(r"^\s*\S+__mutmut_\d+: (.+)$", listing, re.M))
    survivors = re.findall(r"^\s*(\S+__mutmut_\d+): survived$", listing, re.M)
    diffs = [subprocess.run([str(tool), "show", name], cwd=workdir, capture_output=True,
                            text=True).stdout for name in survivors]
    (workdir / "survivors.diff").write_text("".join(diffs))
    return verdicts, survivors, workdir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modules", nargs="+", default=list(MODULES), choices=MODULES)
    parser.add_argument("--max-children", type=int, default=1,
                        help="mutants tested at once (default 1: leaves a core to others)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results-mutation.md"))
    args = parser.parse_args(argv)
    tool = mutmut()
    lines = ["# Mutation testing of worker/cityscapes/", "",
             f"`python -m bench.mutation --modules {' '.join(args.modules)}"
             f" --max-children {args.max_children}`; tests: tests/cityscapes/ but"
             f" {Path(SLOW_TESTS).name}.", "",
             "| module | mutants | killed | timed out | survived | other | score |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    survivors: dict[str, list[str]] = {}
    for module in args.modules:
        verdicts, survivors[module], workdir = run_module(tool, module, args.max_children)
        print(f"{module}: {dict(verdicts)} (in {workdir})", file=sys.stderr)
        total = sum(verdicts.values())
        caught = verdicts["killed"] + verdicts["timeout"]
        other = total - caught - verdicts["survived"]
        score = caught / total if total else 1.0
        lines.append(f"| {module} | {total} | {verdicts['killed']} | {verdicts['timeout']}"
                     f" | {verdicts['survived']} | {other} | {score:.1%}"
                     f"{'' if score >= TARGET else ' (below 90 %)'} |")
    lines += ["", "Other: mutmut's verdicts but killed, timeout and survived (no tests, segfault).",
              "Survivors (each argued in bench/mutation-equivalents.txt):", ""]
    for module, names in survivors.items():
        lines.append(f"- {module}: {', '.join(n.split('.')[-1] for n in names) or 'none'}")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
