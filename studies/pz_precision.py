"""What storing PZ as float16 would lose: the p(z) metrics of a stage output, from
its float32 rows and from the same rows rounded to float16 (renormalised to sum to 1).

    csst-sls-z simulate --n 8192 --seed 5 --population test --per-file 8192 --out /tmp/pz --no-progress
    csst-sls-z run /tmp/pz/sim_test_s5_0000.fits -o /tmp/pz/out.fits --catalog-only --no-progress
    python studies/pz_precision.py /tmp/pz/sim_test_s5_0000.fits /tmp/pz/out.fits

The truth is the simulated input's TRUTH extension; metrics are those of the evaluation
(``training/pz_metrics.py``: PIT KS distance, mean CRPS, HPD coverage, stacked n(z)).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import fitsio
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def metrics_both_ways(pz32: np.ndarray, grid, z_true: np.ndarray) -> dict:
    from csst_sls_z.training.pz_metrics import pz_metrics
    with np.errstate(invalid="ignore"):
        pz16 = pz32.astype(np.float16).astype(np.float64)
        pz16 = pz16 / pz16.sum(axis=1, keepdims=True)
    ok = np.isfinite(pz32).all(axis=1)
    out = {"float32": pz_metrics(pz32[ok].astype(np.float64), grid, z_true[ok]),
           "float16": pz_metrics(pz16[ok], grid, z_true[ok])}
    nz = pz32[ok] > 0
    out["zeroed_by_float16"] = float(np.mean((pz32[ok].astype(np.float16) == 0)[nz]))
    out["max_abs_diff"] = float(np.nanmax(np.abs(pz16[ok] - pz32[ok])))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("input", help="simulated product (with TRUTH)")
    p.add_argument("output", help="the stage's output of it (with PZ)")
    args = p.parse_args(argv)
    from csst_sls_z.datamodel import EXT_REDSHIFT, EXT_TRUTH
    from csst_sls_z.pz import PzGrid
    cat, header = fitsio.read(args.output, ext=EXT_REDSHIFT, columns=["OBJID", "PZ"], header=True)
    truth = fitsio.read(args.input, ext=EXT_TRUTH, columns=["OBJID", "Z_TRUE"])
    z_true = dict(zip(truth["OBJID"].tolist(), truth["Z_TRUE"].astype(float).tolist()))
    zt = np.array([z_true[i] for i in cat["OBJID"].tolist()])
    res = metrics_both_ways(cat["PZ"].astype(np.float32), PzGrid.from_header(header), zt)
    for k in ("float32", "float16"):
        m = res[k]
        print(f"{k}: n {m['n']}, PIT KS {m['pit']['ks']:.5f}, CRPS {m['crps_mean']:.6f}, HPD 68/95 "
              f"{m['hpd_coverage']['0.68']:.4f} / {m['hpd_coverage']['0.95']:.4f}, n(z) abs diff {m['nz_abs_diff']:.5f}")
    print(f"nonzero probabilities float16 makes 0: {res['zeroed_by_float16']:.3%}; largest change of a "
          f"probability: {res['max_abs_diff']:.2e}")
    print("JSON " + json.dumps({k: res[k] for k in ("zeroed_by_float16", "max_abs_diff")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
