"""How Tusk imports a directory of Dify DSL files, as a Markdown report.

    python -m tusk.workflow.corpus DIR [-o FILE]

For each `*.yml` / `*.yaml` file: the app mode, the DSL version, the import status (or the
error), the node types used, whether export gives back the same graph, and the nodes Tusk
cannot run with the reason; then every node type with its count and whether Tusk runs it.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from tusk.workflow.dsl import (
    CURRENT_DSL_VERSION,
    WORKFLOW_MODES,
    DslError,
    NodeIssue,
    load_yaml,
    read_dsl,
)
from tusk.workflow.dsl_export import write_dsl
from tusk.workflow.graph import NOTE_TYPES
from tusk.workflow.nodes import GROUP, unsupported_reason

SUFFIXES = (".yml", ".yaml")


@dataclass(frozen=True)
class FileReport:
    name: str
    mode: str = ""
    version: str = ""
    status: str = "failed"
    error: str = ""  # why the import failed
    node_types: Counter[str] = field(default_factory=Counter)
    unsupported: tuple[NodeIssue, ...] = ()
    other_warnings: tuple[str, ...] = ()
    round_trip: tuple[str, ...] = ()  # differences after an export and a re-import


# --- checks ----------------------------------------------------------------------------------


def node_types_of(graph: Mapping[str, Any]) -> Counter[str]:
    """Node types by count, canvas notes left out."""
    found: Counter[str] = Counter()
    for node in graph.get("nodes") or []:
        data = node.get("data") if isinstance(node, Mapping) else None
        node_type = data.get("type") if isinstance(data, Mapping) else None
        if isinstance(node_type, str) and node_type not in NOTE_TYPES:
            found[node_type] += 1
    return found


def _by_id(items: Any) -> dict[str, Any]:
    return {
        str(item.get("id", index)) if isinstance(item, Mapping) else str(index): item
        for index, item in enumerate(items or [])
    }


def _without(value: Any, path: Sequence[str]) -> Any:
    """A copy of `value` without the key at `path` (the part an import may change)."""
    if not path or not isinstance(value, Mapping):
        return value
    head, rest = path[0], path[1:]
    copied = dict(value)
    if not rest:
        copied.pop(head, None)
    elif head in copied:
        copied[head] = _without(copied[head], rest)
    return copied


NODE_FREE_PATH = ("data", "dataset_ids")  # knowledge-retrieval ids: dropped when unreadable
CONFIG_FREE_PATH = ("dataset_configs", "datasets")  # the same in a chat app's model config


def _list_differences(kind: str, before: Any, after: Any, free: Sequence[str] = ()) -> list[str]:
    if before == after:
        return []
    old, new = _by_id(before), _by_id(after)
    if list(old) != list(new):
        added, removed = sorted(new.keys() - old.keys()), sorted(old.keys() - new.keys())
        return [f"{kind}s added {added}, removed {removed} or reordered"]
    return [
        f"{kind} {key} differs"
        for key in old
        if _without(old[key], free) != _without(new[key], free)
    ]


def round_trip_differences(text: str) -> list[str]:
    """What differs between a file and the export of its import (secrets included, so that
    only the import rules can change anything): the graph's nodes, edges and viewport and the
    features, or a chat app's model config. Knowledge-base ids are left out of the comparison:
    import drops those it cannot read (Dify's rule for ids it cannot decrypt). Empty when the
    round trip is exact."""
    original = load_yaml(text)
    imported = read_dsl(text)
    exported = load_yaml(
        write_dsl(
            imported.app,
            imported.workflow,
            model_config=imported.model_config,
            dependencies=imported.dependencies,
            include_secret=True,
        )
    )
    if imported.workflow is None:
        before_config = _without(original["model_config"], CONFIG_FREE_PATH)
        same = before_config == _without(exported["model_config"], CONFIG_FREE_PATH)
        return [] if same else ["model_config differs"]
    before, after = original["workflow"], exported["workflow"]
    graph, new_graph = before.get("graph") or {}, after["graph"]
    found = _list_differences("node", graph.get("nodes"), new_graph.get("nodes"), NODE_FREE_PATH)
    found += _list_differences("edge", graph.get("edges"), new_graph.get("edges"))
    if graph.get("viewport") != new_graph.get("viewport"):
        found.append("viewport differs")
    if (before.get("features") or {}) != after["features"]:
        found.append("features differ")
    return found


def inspect_text(name: str, text: str) -> FileReport:
    try:
        imported = read_dsl(text)
    except DslError as exc:
        return FileReport(name=name, error=exc.message)
    return FileReport(
        name=name,
        mode=imported.mode,
        version=imported.imported_version,
        status=imported.status,
        node_types=node_types_of(imported.workflow.graph) if imported.workflow else Counter(),
        unsupported=imported.unsupported,
        other_warnings=imported.notes,
        round_trip=tuple(round_trip_differences(text)),
    )


def dsl_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in SUFFIXES and p.is_file())


def inspect_directory(directory: Path) -> list[FileReport]:
    return [inspect_text(p.name, p.read_text(encoding="utf-8")) for p in dsl_files(directory)]


# --- support of node types -------------------------------------------------------------------


def support_of(node_type: str) -> str | None:
    """None when Tusk runs the node type, else why not. A type registered as an entry point
    whose module cannot be imported is told apart from one Tusk does not know."""
    reason = unsupported_reason(node_type)
    if reason is None:
        return None
    if any(entry.name == node_type for entry in entry_points(group=GROUP)):
        return "registered, but its module cannot be loaded in this installation"
    return reason


# --- Markdown ----------------------------------------------------------------------------------


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def _status_line(reports: Sequence[FileReport]) -> str:
    counts = Counter(r.status for r in reports)
    parts = [f"{counts[s]} {s}" for s in sorted(counts)]
    workflows = [r for r in reports if r.mode in WORKFLOW_MODES]
    runnable = sum(1 for r in workflows if not r.unsupported)
    exact = sum(1 for r in reports if r.mode and not r.round_trip)
    return (
        f"{len(reports)} files: {', '.join(parts)}. Of the {len(workflows)} workflow and "
        f"advanced-chat apps, Tusk can run every node of {runnable}. Export gives back the same "
        f"graph (or model config) for {exact} of the files."
    )


def _type_rows(reports: Sequence[FileReport]) -> list[tuple[str, int, int, str]]:
    nodes: Counter[str] = Counter()
    files: Counter[str] = Counter()
    for report in reports:
        nodes.update(report.node_types)
        files.update(report.node_types.keys())
    rows = []
    for node_type, count in sorted(nodes.items(), key=lambda item: (-item[1], item[0])):
        reason = support_of(node_type)
        rows.append(
            (
                f"`{node_type}`",
                count,
                files[node_type],
                "yes" if reason is None else f"no: {reason}",
            )
        )
    return rows


def _file_row(report: FileReport) -> tuple[str, ...]:
    if not report.mode:
        return (f"`{report.name}`", "", "", f"failed: {report.error}", "", "", "")
    types = ", ".join(f"{t} {n}" for t, n in sorted(report.node_types.items())) or "(no graph)"
    blocked = sorted({issue.type for issue in report.unsupported})
    return (
        f"`{report.name}`",
        report.mode,
        report.version,
        report.status,
        types,
        ", ".join(blocked) or "none",
        "same" if not report.round_trip else "; ".join(report.round_trip),
    )


def _details(report: FileReport) -> list[str]:
    if not report.unsupported and not report.other_warnings:
        return []
    lines = [f"### `{report.name}`", ""]
    for issue in report.unsupported:
        reason = support_of(issue.type) if issue.reason.startswith("unknown") else issue.reason
        lines.append(f"- node `{issue.node_id}` ({_cell(issue.title)}, `{issue.type}`): {reason}")
    lines += [f"- {_cell(note)}" for note in report.other_warnings]
    return [*lines, ""]


def render(reports: Sequence[FileReport], source: str) -> str:
    lines = [
        "# Dify DSL files: how Tusk imports them",
        "",
        f"Generated from `{source}` by `python -m tusk.workflow.corpus`; Tusk declares DSL "
        f"version {CURRENT_DSL_VERSION}. Regenerate it with",
        f"`.venv/bin/python -m tusk.workflow.corpus {source} -o docs/workflow-dsl-corpus.md`.",
        "Which node types Tusk runs depends on the node modules installed when it is generated.",
        "",
        "*Round trip*: each file is imported, exported (secrets included) and compared with the "
        "original: the graph's nodes, edges and viewport and the features, or a chat app's model "
        "config. The only change import makes on purpose is to drop knowledge-base ids that are "
        "not plain UUIDs (Dify encrypts them with a key of the exporting workspace).",
        "",
        _status_line(reports),
        "",
        "## Node types",
        "",
        *_table(["node type", "nodes", "files", "Tusk runs it"], _type_rows(reports)),
        "",
        "## Files",
        "",
        *_table(
            ["file", "mode", "DSL version", "import", "node types", "cannot run", "round trip"],
            (_file_row(r) for r in reports),
        ),
        "",
        "## Nodes Tusk cannot run, and other import warnings",
        "",
    ]
    for report in reports:
        lines += _details(report)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("directory", type=Path, help="a directory of Dify DSL files")
    parser.add_argument("-o", "--output", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    if not args.directory.is_dir():
        parser.error(f"{args.directory} is not a directory")
    report = render(inspect_directory(args.directory), str(args.directory))
    if args.output is None:
        sys.stdout.write(report)
    else:
        args.output.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
