"""Run every benchmark; print the report and write it to bench/results/latest.md.

.venv/bin/python -m bench [--runs N] [--ops N] [--workers N] [--calls N] [--passages N]
                          [--quick]
                          [--only startup|primitives|models|sandbox|knowledge|workflow|agents|apps]
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import (
    BenchError,
    load_average,
    machine_description,
    markdown_fields,
    positive_int,
    redis_problems,
)

RESULTS = Path(__file__).resolve().parent / "results"
BENCHMARKS = (
    "startup",
    "primitives",
    "models",
    "sandbox",
    "knowledge",
    "workflow",
    "agents",
    "apps",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    env = os.environ.get
    parser.add_argument(
        "--runs",
        type=positive_int,
        default=int(env("BENCH_RUNS", "5")),
        help="start-ups of each kind (default: $BENCH_RUNS or 5)",
    )
    parser.add_argument(
        "--ops",
        type=positive_int,
        default=int(env("BENCH_OPS", "2000")),
        help="operations per primitives measurement (default: $BENCH_OPS or 2000)",
    )
    parser.add_argument(
        "--workers", type=positive_int, default=8, help="concurrent clients (default 8)"
    )
    parser.add_argument(
        "--calls",
        type=positive_int,
        default=int(env("BENCH_CALLS", "200")),
        help="chat calls per system and concurrency level, at least (default: $BENCH_CALLS or 200)",
    )
    parser.add_argument(
        "--passages",
        type=positive_int,
        default=int(env("BENCH_PASSAGES", "64")),
        help="passages embedded per batch size and system, at least "
        "(default: $BENCH_PASSAGES or 64)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smaller knowledge benchmark (fewer pages, chunks and queries); "
        "a quarter of the workflow benchmark's runs and requests",
    )
    parser.add_argument(
        "--only", action="append", choices=BENCHMARKS, help="run only this one (repeatable)"
    )
    return parser


def _revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=RESULTS.parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def _run(selected: Sequence[str], args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The report's sections, and the failures found (a wrong counter, for instance)."""
    # Imported here, once the prerequisites are known to be there (bench.primitives needs redis).
    sections: list[str] = []
    failures: list[str] = []
    if "startup" in selected:
        from bench import startup

        sections.append(startup.report(startup.measure(args.runs)))
    if "primitives" in selected:
        from bench import primitives

        measured = primitives.measure(args.ops, args.workers)
        text, found = primitives.report(measured, args.ops, args.workers)
        sections.append(text)
        failures += found
    if "models" in selected:
        from bench import models

        results = models.measure(args.calls, args.passages)
        text, found = models.report(results, args.calls, args.passages)
        sections.append(text)
        failures += found
    if "sandbox" in selected:
        from bench import sandbox

        measured = sandbox.measure(args.calls, args.workers)
        text, found = sandbox.report(measured, args.calls, args.workers)
        sections.append(text)
        failures += found
    if "knowledge" in selected:
        from bench import knowledge

        text, found = knowledge.report(knowledge.measure(knowledge.options(args)))
        sections.append(text)
        failures += found
    if "workflow" in selected:
        from bench import workflow

        runs, calls = workflow.DEFAULT_RUNS, max(args.calls, workflow.DEFAULT_CALLS)
        runs, calls = workflow.quick(runs, calls) if args.quick else (runs, calls)
        text, found = workflow.report(workflow.measure(runs, calls), runs, calls)
        sections.append(text)
        failures += found
    if "apps" in selected:
        from bench import apps

        text, found = apps.report(apps.measure(args.calls), args.calls)
        sections.append(text)
        failures += found
    if "agents" in selected:
        from bench import agents

        runs, calls = agents.sizes(agents.DEFAULT_RUNS, args.calls, args.quick)
        text, found = agents.report(agents.measure(runs, calls))
        sections.append(text)
        failures += found
    return sections, failures


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    selected = args.only or list(BENCHMARKS)
    problems = redis_problems() if "primitives" in selected else []
    if "models" in selected:
        from bench.models import problems as model_problems

        problems += model_problems()
    if "sandbox" in selected:
        from bench.sandbox import problems as sandbox_problems

        problems += sandbox_problems()
    if "knowledge" in selected:
        from bench.knowledge import problems as knowledge_problems

        problems += knowledge_problems()
    if problems:
        print("\n".join(f"bench: {problem}" for problem in problems), file=sys.stderr)
        return 2
    from tusk import __version__

    started_at = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = machine_description()
    started = time.monotonic()
    try:
        sections, failures = _run(selected, args)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    machine["load average (1, 5, 15 min)"] += f" at the start, {load_average()} at the end"
    command = " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])
    header = (
        f"# Tusk benchmarks\n\nTusk {__version__} (commit {_revision()}), {started_at}: "
        f"`{command}`, {time.monotonic() - started:.0f} s in all."
    )
    text = "\n\n".join([header, *sections, "## Machine", markdown_fields(machine)]) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(text)
    print(f"(written to {RESULTS / 'latest.md'})", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
