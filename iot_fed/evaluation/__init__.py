"""Detection-quality evaluation (no Dagster): fault injection (:mod:`.faults`), the one
module of detection metrics (:mod:`.metrics`), statistical baselines (:mod:`.baselines`),
the compared methods (:mod:`.methods`) and the benchmark (:mod:`.benchmark`)."""
