"""What every benchmark shares: where results go, the machine record, tables, process CPU.

Each benchmark writes ONE canonical file, ``bench/results/<name>.json``, made of sections
(one per part it measures). A run replaces the sections it measured and keeps the others,
so a part can be re-measured alone. ``--quick`` runs write to ``assets_data/bench-quick/``
instead: tiny configurations never overwrite the canonical figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from iot_fed.evaluation.report import machine_info

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
QUICK_RESULTS = ROOT / "assets_data" / "bench-quick"
C1 = "-XX:TieredStopAtLevel=1"  # the JVM option "C1 JIT only" (the product's default)

__all__ = [
    "C1",
    "create_pg_database",
    "drop_pg_database",
    "QUICK_RESULTS",
    "RESULTS",
    "ROOT",
    "descendants",
    "machine_info",
    "median",
    "parts_parser",
    "print_table",
    "process_role",
    "processes",
    "results_path",
    "run_parts",
    "table",
    "tree_cpu_s",
    "write_results",
]


def create_pg_database(uri: str, name: str) -> None:
    """A throwaway database on the server of ``uri`` (a maintenance database URI)."""
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_pg_database(uri: str, name: str) -> None:
    with psycopg.connect(uri, autocommit=True) as conn:
        stmt = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        conn.execute(stmt.format(sql.Identifier(name)))


def results_path(name: str, quick: bool = False) -> Path:
    """The canonical file of benchmark ``name`` (the quick one under assets_data/)."""
    return (QUICK_RESULTS if quick else RESULTS) / f"{name}.json"


def write_results(name: str, sections: dict[str, Any], *, quick: bool = False) -> Path:
    """Replace ``sections`` in the benchmark's file, keeping its other sections.

    Each section records the command and machine it was measured with (sections of one
    file may come from different runs)."""
    path = results_path(name, quick)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = json.loads(path.read_text()) if path.exists() else {}
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    for key, payload in sections.items():
        meta = {"command": command, "machine": machine_info(), "load_avg_1m": os.getloadavg()[0]}
        doc[key] = {**meta, **payload} if isinstance(payload, dict) else payload
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"wrote {path.relative_to(ROOT)} ({', '.join(sections)})")
    return path


Part = Callable[[argparse.Namespace], dict[str, Any]]


def parts_parser(doc: str, parts: dict[str, Part], quick_help: str) -> argparse.ArgumentParser:
    """The options every benchmark with parts has: ``--parts`` and ``--quick``."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--parts", default=",".join(parts), help="comma-separated: " + ", ".join(parts))
    ap.add_argument("--quick", action="store_true", help=quick_help)
    return ap


def run_parts(name: str, parts: dict[str, Part], args: argparse.Namespace) -> None:
    """Each chosen part in turn; its section (``a-b`` -> ``a_b``) written as soon as done."""
    for part in args.parts.split(","):
        write_results(name, {part.replace("-", "_"): parts[part](args)}, quick=args.quick)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; floats to 3 significant digits, None as '-'."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    print(f"\n{title}\n\n{table(headers, rows)}\n", flush=True)


def median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if len(xs) else None


# --- CPU of a process tree (Spark's JVM and Python workers are not waited for) -----
def processes() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent, start time, CPU ticks) of every process now."""
    out = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                st = (p / "stat").read_text()
            except OSError:
                continue
            f = st[st.rfind(")") + 2 :].split()
            out[int(p.name)] = (int(f[1]), int(f[19]), int(f[11]) + int(f[12]))
    return out


def descendants(procs: dict[int, tuple[int, int, int]], root: int) -> set[int]:
    """``root`` and every process below it."""
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(c for c, (parent, _, _) in procs.items() if parent == pid and c not in tree)
    return tree


def tree_cpu_s(root: int) -> float:
    """CPU seconds used so far by ``root`` and the processes below it now."""
    procs = processes()
    ticks = sum(procs[pid][2] for pid in descendants(procs, root) if pid in procs)
    return ticks / os.sysconf("SC_CLK_TCK")


def process_role(pid: int, root: int) -> str:
    """driver (the child's Python), jvm, or python-workers (Spark's daemon and workers)."""
    if pid == root:
        return "driver"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "other"
    argv0 = cmd.split(b"\0")[0]
    if argv0.endswith(b"java"):
        return "jvm"
    return "python-workers" if b"python" in argv0 and b"daemon" in cmd else "other"
