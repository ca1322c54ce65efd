import numpy as np
import pandas as pd

from iot_fed.readings import epoch_ms


def test_epoch_ms_reads_naive_utc_and_other_zones_alike_and_truncates_to_the_ms():
    utc = pd.Series(
        pd.to_datetime(["1970-01-01 00:00:01.0019", "2004-03-01 00:00:00.0000"], utc=True)
    )
    naive = utc.dt.tz_localize(None)
    elsewhere = utc.dt.tz_convert("America/Los_Angeles")
    expected = np.array([1001, 1_078_099_200_000], np.int64)
    for ts in (utc, naive, elsewhere):
        got = epoch_ms(ts)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, expected)
