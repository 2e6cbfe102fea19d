"""Step ``calibrate``: the calibration and the ZWARN thresholds, fitted on the validation set.

Beta calibration and the single scale factor beside it, the validation objects weighted to
the survey's n(z) (``calibration_target = "survey"``, the default) or not
(``"validation"``); then the thresholds (``training.threshold_choice``).
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

CALIBRATION_TARGETS = ("survey", "validation")


def calibration_weights(regen, z_true):
    """Per-object weights that carry the validation set (training population) to the target."""
    from ...simulation.population import redshift_pdf
    if regen.rc.calibration_target == "validation":
        return None
    if regen.rc.calibration_target != "survey":
        raise ValueError(f"calibration_target must be one of {CALIBRATION_TARGETS}")
    return redshift_pdf(z_true, "test") / redshift_pdf(z_true, "train", regen.cfg.z_max)


def run(regen):
    from ...calibration import calibrated_summary, effective_sample_size, fit_beta, fit_scale
    from ...reffiles.tables import write_calibration, write_thresholds
    from ..threshold_choice import choose_thresholds
    from .head import train_feature_sample
    from .predict import predict_set
    p = predict_set(regen, "val")
    weights = calibration_weights(regen, p["z_true"])
    beta = fit_beta(p["mean"], p["sigma"], p["z_true"], weights=weights)
    scale = fit_scale(p["mean"], p["sigma"], p["z_true"], weights=weights)
    how = ("unweighted" if weights is None else
           f"weighted to the CSST-like n(z) of the test population "
           f"(effective size {effective_sample_size(weights):.0f})")
    write_calibration(regen.work / "calibration.fits", beta, scale, "SIMULATION", overwrite=True,
                      history=[f"Fitted on {p['z_true'].size} validation spectra (seed {regen.seeds['val']}), {how}."])
    log.info("calibration fitted %s", how)
    summ = calibrated_summary(beta, p["mean"], p["sigma"])
    th, why = choose_thresholds(summ["Z"], summ["ZERR"], p["z_true"], p["snr_gi"], p["features"],
                                train_feature_sample(regen), regen.cfg.z_min, regen.cfg.z_max)
    write_thresholds(regen.work / "thresholds.fits", th, "SIMULATION", history=why, overwrite=True)
    regen.save_json("thresholds_why.json", why)
    log.info("thresholds: %s", " ".join(why))
