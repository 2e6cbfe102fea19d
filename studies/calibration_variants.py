"""Which part of the calibration fit moves the coverage? Four variants on one set's predictions.

    csst-sls-z regenerate --config cpu --out DIR --reuse-network reference_files/csst_sls_z_0002
    python studies/calibration_variants.py DIR/work

Reads the BNN predictions that regeneration caches in ``DIR/work`` (``pred_val.npz``,
``pred_test.npz``) and fits the Beta calibration four ways: unweighted or weighted to the
survey's n(z), with or without matching the central 68% interval. For each it prints the
68% / 95% coverage on the (weighted) validation set and on the test set, and beside them
the raw coverage, so the population shift in z can be told apart from the fit's shape.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def coverage(calib, pred, weights=None):
    from csst_sls_z.calibration import calibrated_summary
    s = calibrated_summary(calib, pred["mean"], pred["sigma"])
    z = pred["z_true"]
    in68 = (z >= s["Z_LO"]) & (z <= s["Z_HI"])
    in95 = (z >= s["Z_LO95"]) & (z <= s["Z_HI95"])
    return float(np.average(in68, weights=weights)), float(np.average(in95, weights=weights))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("workdir", type=Path, help="a regeneration's work directory (DIR/work)")
    args = p.parse_args(argv)
    from csst_sls_z.training.calibration_fit import fit_beta
    from csst_sls_z.simulation.population import redshift_pdf
    try:
        val, test = (dict(np.load(args.workdir / f"pred_{name}.npz")) for name in ("val", "test"))
    except OSError as exc:
        print(f"calibration_variants: error: {exc}", file=sys.stderr)
        return 1
    w = redshift_pdf(val["z_true"], "test") / redshift_pdf(val["z_true"], "train")
    raw_val = float(np.average(np.abs(val["z_true"] - val["mean"]) <= val["sigma"], weights=w))
    raw_test = float(np.mean(np.abs(test["z_true"] - test["mean"]) <= test["sigma"]))
    print(f"raw 68% coverage: validation weighted to the survey n(z) {raw_val:.3f}, test {raw_test:.3f}\n")
    print("| fit | validation 68% / 95% (weighted) | test 68% / 95% |")
    print("|---|---|---|")
    for weighted in (False, True):
        for match in (False, True):
            calib = fit_beta(val["mean"], val["sigma"], val["z_true"], weights=w if weighted else None,
                             match_central=match)
            v68, v95 = coverage(calib, val, w)
            t68, t95 = coverage(calib, test)
            label = f"{'survey-weighted' if weighted else 'unweighted'}, {'central 68% matched' if match else 'log-loss only'}"
            print(f"| {label} | {v68:.4f} / {v95:.4f} | {t68:.4f} / {t95:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
