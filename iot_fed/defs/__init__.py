"""The thin Dagster layer: assets, sensors, checks and resources over the core packages."""
