"""The garbage collector of long-running processes: freeze what start-up made.

A full collection walks every tracked object, and a process that imported pandas,
pyarrow, pyspark or FastAPI holds about a hundred thousand of them, paid at random moments
of a request or a micro-batch (figures: docs/performance.md#code-shaped-by-measurements).
Once a process has
imported its modules and built its long-lived objects, :func:`freeze_heap` moves them to
the permanent generation, which collections skip (:func:`gc.freeze`); what is made later
is collected as usual.
"""

from __future__ import annotations

import gc


def freeze_heap() -> int:
    """Collect once, then freeze every object left; return how many are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
