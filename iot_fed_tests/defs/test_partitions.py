"""The device partitions' range helper."""

from iot_fed.defs.partitions import covering_range


def test_covering_range_is_the_smallest_run_holding_every_wanted_key() -> None:
    keys = ["1", "2", "10", "3", "7"]  # Dagster's order: the order the keys were added
    assert covering_range(keys, ["3", "2"]) == ["2", "10", "3"]
    assert covering_range(keys, ["7"]) == ["7"]
