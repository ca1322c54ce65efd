"""Intel Berkeley Lab data: download (or generate), parse, validate, clean."""

from iot_fed.data.clean import (
    build_clean,
    build_connectivity,
    build_mote_locations,
    malformed_path_for,
)
from iot_fed.data.download import RawSource, download, obtain_mote_locs, obtain_raw
from iot_fed.data.generator import generate, generate_mote_locs, labels_path_for
from iot_fed.data.parse import (
    CLEAN_COLUMNS,
    READING_COLUMNS,
    parse_connectivity,
    parse_lines,
    parse_mote_locs,
    parse_readings,
)
from iot_fed.data.schemas import CleanReadings, MoteLocations

__all__ = [
    "CLEAN_COLUMNS",
    "READING_COLUMNS",
    "CleanReadings",
    "MoteLocations",
    "RawSource",
    "build_clean",
    "build_connectivity",
    "build_mote_locations",
    "download",
    "generate",
    "generate_mote_locs",
    "labels_path_for",
    "malformed_path_for",
    "obtain_mote_locs",
    "obtain_raw",
    "parse_connectivity",
    "parse_lines",
    "parse_mote_locs",
    "parse_readings",
]
