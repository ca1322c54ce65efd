"""Dataset group: the Intel Berkeley Lab readings (download, local file or generator).

pandas/pandera are imported inside the assets (only their runs need them)."""

from pathlib import Path

import dagster as dg

from iot_fed.defs.resources import SettingsResource


def _meta(d: dict) -> dict:
    """Dagster metadata from a plain dict (paths as path metadata, None dropped)."""
    out = {}
    for k, v in d.items():
        if v is None:
            continue
        out[k] = dg.MetadataValue.path(v) if k.endswith("_path") else v
    return out


@dg.asset(
    group_name="dataset",
    description="Raw Intel Lab data.txt: the official download, "
    "IOT_FED_DATA_FILE, or the calibrated generator when neither is reachable.",
)
def intel_lab_raw(context: dg.AssetExecutionContext, settings: SettingsResource) -> str:
    from iot_fed.data.download import obtain_raw

    src = obtain_raw(settings.get())
    (context.log.warning if src.source == "synthetic" else context.log.info)(
        "intel_lab_raw source: %s (%s)", src.source, src.detail
    )
    context.add_output_metadata(
        {
            "source": src.source,
            "detail": src.detail,
            "raw_path": dg.MetadataValue.path(str(src.path)),
            "bytes": src.path.stat().st_size,
            "labels_path": str(src.labels_path or ""),
        }
    )
    return str(src.path)


@dg.asset(
    group_name="dataset",
    description="Parsed, typed, de-duplicated, pandera-validated "
    "readings (Parquet); malformed lines kept aside with reasons, faults flagged.",
)
def intel_lab_clean(
    context: dg.AssetExecutionContext, settings: SettingsResource, intel_lab_raw: str
) -> str:
    from iot_fed.data.clean import build_clean
    from iot_fed.stream.producer import default_data_path

    raw = Path(intel_lab_raw)
    labels = raw.with_name(raw.name + ".labels.csv")
    out = default_data_path(settings.get())
    _, meta = build_clean(raw, labels if labels.exists() else None, out)
    context.add_output_metadata(_meta(meta))
    return str(out)


@dg.asset(group_name="dataset", description="Mote positions in the lab (mote_locs.txt).")
def mote_locations(context: dg.AssetExecutionContext, settings: SettingsResource) -> str:
    from iot_fed.data.clean import build_mote_locations
    from iot_fed.data.download import obtain_mote_locs

    src = obtain_mote_locs(settings.get())
    df, meta = build_mote_locations(src.path)
    out = settings.get().data_dir / "intel_lab" / "mote_locations.parquet"
    df.to_parquet(out, index=False)
    context.add_output_metadata(
        {"source": src.source, **_meta(meta), "parquet_path": dg.MetadataValue.path(str(out))}
    )
    return str(out)
