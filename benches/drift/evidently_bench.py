"""The peer side of `cargo bench --bench drift`: Evidently's DataDriftPreset, and scipy per
column, on the data the Rust bench wrote (float64 little-endian, [2][columns][rows]:
reference then current).

    python benches/drift/evidently_bench.py DATA ROWS COLUMNS

Prints one JSON object: seconds per method, and Evidently's per-column scores and tests.
Run with Evidently's own virtual environment (the Rust bench creates it under
~/.cache/inferd/evidently-venv: evidently 0.7 with pandas < 3, which it needs).
"""

import json
import sys
import time
import warnings

import numpy as np
import pandas as pd
from scipy import stats


def main() -> None:
    path, rows, cols = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    a = np.fromfile(path, dtype="<f8").reshape(2, cols, rows)
    names = [f"c{j}" for j in range(cols)]
    ref = pd.DataFrame({n: a[0, j] for j, n in enumerate(names)})
    cur = pd.DataFrame({n: a[1, j] for j, n in enumerate(names)})
    out = {}

    # scipy per column: the bare statistical floor (no binning, no report).
    t = time.perf_counter()
    for j in range(cols):
        stats.wasserstein_distance(a[0, j], a[1, j]) / max(np.std(a[0, j]), 0.001)
    out["scipy_wasserstein_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ks = [stats.ks_2samp(a[0, j], a[1, j]) for j in range(cols)]
    out["scipy_ks_s"] = time.perf_counter() - t
    out["scipy_ks"] = [[float(k.statistic), float(k.pvalue)] for k in ks]

    try:
        from evidently.legacy.metric_preset import DataDriftPreset
        from evidently.legacy.pipeline.column_mapping import ColumnMapping
        from evidently.legacy.report import Report
    except ImportError as e:  # pragma: no cover - reported, not fatal
        out["evidently_error"] = str(e)
        print(json.dumps(out))
        return
    mapping = ColumnMapping(numerical_features=names, categorical_features=[])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for preset, key in ((DataDriftPreset(), "evidently_s"), (DataDriftPreset(stattest="ks"), "evidently_ks_s")):
            t = time.perf_counter()
            report = Report(metrics=[preset])
            report.run(reference_data=ref, current_data=cur, column_mapping=mapping)
            result = report.as_dict()
            out[key] = time.perf_counter() - t
            table = next(m["result"] for m in result["metrics"] if "drift_by_columns" in m["result"])
            out[key.replace("_s", "_columns")] = {
                n: [c["stattest_name"], float(c["drift_score"]), bool(c["drift_detected"])]
                for n, c in table["drift_by_columns"].items()
            }
    import evidently

    out["evidently_version"] = evidently.__version__
    print(json.dumps(out))


if __name__ == "__main__":
    main()
