"""The evaluation tests' default frame (see :func:`helpers.make_frame`)."""

from __future__ import annotations

import pandas as pd
import pytest

from iot_fed_tests.evaluation.helpers import make_frame


@pytest.fixture
def frame() -> pd.DataFrame:
    return make_frame()
