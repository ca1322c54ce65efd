"""Running a benchmark's ``--quick`` configuration from a test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
QUICK_RESULTS = ROOT / "assets_data" / "bench-quick"


def run_quick(script: str, result: str, timeout_s: int, *args: str) -> dict[str, Any]:
    """``bench/<script> --quick [args]`` in the repository root; its fresh ``<result>.json``."""
    path = QUICK_RESULTS / f"{result}.json"
    path.unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, f"bench/{script}", "--quick", *args],
        cwd=ROOT,
        check=True,
        timeout=timeout_s,
    )
    return json.loads(path.read_text())
