"""JAX's persistent compilation cache, so a fresh process (one Dagster run) reuses the
executables compiled by earlier runs instead of compiling the training round again."""

from __future__ import annotations

from pathlib import Path

import jax

_enabled: Path | None = None


def enable_compilation_cache(path: Path) -> None:
    """Cache every compiled executable under ``path`` (idempotent, first path wins)."""
    global _enabled
    if _enabled is not None:
        return
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _enabled = path
