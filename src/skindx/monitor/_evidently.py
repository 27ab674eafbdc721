"""Evidently, imported once for the monitor, with the one shim pandas 3 needs.

Evidently 0.7.23 (the newest release) imports `pandas.core.dtypes.common.infer_dtype_from_object`
at import time, a private helper that pandas 3 removed; the project pins pandas 3 (the pipeline,
MLflow and Streamlit sets). Only Evidently's legacy column-type test calls it, which the monitor
does not run. Until Evidently supports pandas 3, this module puts back the same mapping (dtype
-> its scalar type, what the pandas 2 helper returned for the types that test passes) before
importing Evidently. Drop the shim when a release imports cleanly (tests/monitor checks the
import).
"""

from __future__ import annotations

import pandas.core.dtypes.common as _pandas_common
from pandas.api.types import pandas_dtype

if not hasattr(_pandas_common, "infer_dtype_from_object"):

    def _infer_dtype_from_object(dtype):  # the pandas 2 helper's result for dtypes and types
        return pandas_dtype(dtype).type

    _pandas_common.infer_dtype_from_object = _infer_dtype_from_object

from evidently import DataDefinition, Dataset, Report  # noqa: E402
from evidently.metrics import ValueDrift  # noqa: E402
from evidently.presets import DataDriftPreset  # noqa: E402

__all__ = ["DataDefinition", "DataDriftPreset", "Dataset", "Report", "ValueDrift"]
