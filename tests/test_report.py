"""The regeneration report's tables from an evaluation record (training/report.py)."""
from __future__ import annotations

from csst_sls_z.training.report import refined_table


def _bins(values, key="value"):
    edges = [(0.0, 3.0), (3.0, 1e9)]
    return [{"lo": lo, "hi": hi, "n": 10 * (i + 1), key: v} for i, ((lo, hi), v) in enumerate(zip(edges, values))]


def test_refined_table_sets_network_refined_and_bound_side_by_side():
    fam = {"snr_bins": {"sigma_nmad": _bins([0.02, 0.004]), "eta": _bins([0.3, 0.05])},
           "refined": {"basis": ["KCORRECT", "SPSPCA"],
                       "snr_bins": {"sigma_nmad": _bins([0.015, 0.0012]), "eta": _bins([0.32, 0.04]),
                                    "cov68": _bins([0.66, float("nan")])}},
           "oracle": {"snr_bins": {"sigma_nmad": _bins([0.004, 0.001]), "eta": _bins([0.1, 0.0])}}}
    text = refined_table({"generalisation": {"families": {"REDROCK2016": fam}}})
    rows = text.splitlines()
    assert len(rows) == 4
    assert rows[2] == ("| REDROCK2016 (KCORRECT+SPSPCA) | 0-3 | 10 | 0.02000 -> 0.01500 (0.00400, n = 10) | "
                       "30.00% -> 32.00% (10.00%, n = 10) | 0.66000 |")
    assert rows[3].startswith("| REDROCK2016 (KCORRECT+SPSPCA) | >= 3 | 20 | 0.00400 -> 0.00120 (0.00100, n = 20) |")
    assert rows[3].endswith("| - |")                       # no coverage where no object was refined
    no_bound = {k: v for k, v in fam.items() if k != "oracle"}
    assert "(" not in refined_table({"generalisation": {"families": {"X": no_bound}}}).splitlines()[2].split("|")[4]
    assert refined_table({"generalisation": {"families": {"X": {"snr_bins": {}}}}}).startswith("(no refined")
