"""Mutation testing of the format core: do the fast unit tests notice when the code is wrong?

    .venv/bin/python -m bench.mutation [--modules rle export trace ...] [--out bench/results-mutation.md]

mutmut (installed here on first use, into the project's venv: it is a tool of this script, not
of the product) changes `worker/cityscapes/<module>.py` one small edit at a time (an operator,
a constant, a dropped argument) and runs `tests/cityscapes/` against each mutant. A mutant the
tests pass is a survivor: either a missing assertion, or an edit that changes nothing (an
equivalent mutant, to be argued case by case). The score is killed (or timed out) over all.
Takes about 5 minutes a module on 2 cores; not part of CI.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).parents[1]
MODULES = ("export", "trace", "rle", "png", "archive", "labels", "importer")
TARGET = 0.90


def mutmut() -> Path:
    tool = Path(sys.executable).parent / "mutmut"
    if not tool.exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "mutmut>=3.3"], check=True)
    return tool


def run_module(tool: Path, module: str) -> Counter:
    """mutmut's verdicts for one module, counted."""
    config = ROOT / "setup.cfg"
    config.write_text(
        "[mutmut]\n"
        f"paths_to_mutate = worker/cityscapes/{module}.py\n"
        "also_copy = tests\n    worker\n    tasks\n    config\n    examples\n"
        "pytest_add_cli_args_test_selection = tests/cityscapes/\n"
    )
    try:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
        subprocess.run([str(tool), "run"], cwd=ROOT, stdout=subprocess.DEVNULL, check=False)
        listing = subprocess.run([str(tool), "results", "--all", "true"], cwd=ROOT,
                                 capture_output=True, text=True).stdout
    finally:
        config.unlink(missing_ok=True)
    verdicts = Counter(m[1] for m in re.finditer(r"^\s*\S+__mutmut_\d+: (.+)$", listing, re.M))
    survivors = [line.split(":")[0].strip() for line in listing.splitlines()
                 if line.strip().endswith(": survived")]
    verdicts["survivor names"] = survivors  # type: ignore[assignment]
    return verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modules", nargs="+", default=list(MODULES), choices=MODULES)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results-mutation.md"))
    args = parser.parse_args(argv)
    tool = mutmut()
    lines = ["# Mutation testing of worker/cityscapes/", "",
             f"`python -m bench.mutation --modules {' '.join(args.modules)}`; tests: tests/cityscapes/.",
             "", "| module | mutants | killed | timed out | survived | score |",
             "|---|---:|---:|---:|---:|---:|"]
    survivors: dict[str, list[str]] = {}
    for module in args.modules:
        verdicts = run_module(tool, module)
        survivors[module] = verdicts.pop("survivor names")
        total = sum(verdicts.values())
        caught = verdicts["killed"] + verdicts["timeout"]
        score = caught / total if total else 1.0
        lines.append(f"| {module} | {total} | {verdicts['killed']} | {verdicts['timeout']}"
                     f" | {verdicts['survived']} | {score:.1%}"
                     f"{'' if score >= TARGET else ' (below 90 %)'} |")
    lines += ["", "Survivors (`mutmut show NAME` prints the edit):", ""]
    for module, names in survivors.items():
        lines.append(f"- {module}: {', '.join(names) or 'none'}")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
