"""Step ``calibrate``: the calibration and the ZWARN thresholds, fitted on the validation set.

Beta calibration and the single scale factor beside it, the validation objects weighted to
the survey's n(z) (``calibration_target = "survey"``, the default) or not
(``"validation"``); for a network with a binned objective (``zbins``), the temperature of its
p(z) (``calibration_fit.fit_temperature``, same weights; docs/pz.md); then the thresholds
(``training.threshold_choice``), MULTIPLE_PEAKS on the P_ALT of the calibrated p(z).
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


def network_config(regen):
    """The configuration of the network being calibrated (its backbone file's, objective included)."""
    from ...network.weights import read_config
    return read_config(regen.work / "backbone.fits", "backbone")


def pz_of_set(regen, p, calibration_file):
    """(PzMaker, p(z) rows, Z_ALT, P_ALT) of a predicted set ``p`` (``predict_set``) under a calibration."""
    from ...network.objectives import objective_of
    from ...pz import PzGrid, PzMaker, alternative_peaks
    cfg = network_config(regen)
    maker = PzMaker(PzGrid.from_config(cfg), objective_of(cfg).binned, calibration_file)
    pz = maker(output=p.get("output"), mean=p["mean"], sigma=p["sigma"])
    z_alt, p_alt = alternative_peaks(pz, maker.grid)
    return maker, pz, z_alt, p_alt


def run(regen):
    from ...calibration import calibrated_summary
    from ..calibration_fit import effective_sample_size, fit_beta, fit_scale, fit_temperature
    from ...network.objectives import objective_of
    from ...pz import PzGrid
    from ...reffiles.tables import CalibrationFile, write_calibration, write_thresholds
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
    history = [f"Fitted on {p['z_true'].size} validation spectra (seed {regen.seeds['val']}), {how}."]
    cfg = network_config(regen)
    temperature = None
    if objective_of(cfg).binned:
        grid = PzGrid.from_config(cfg)
        temperature = fit_temperature(p["output"], grid.bin_index(p["z_true"]), weights=weights)
        history.append(f"p(z): softmax(logits / T) over the {grid.nbin} network bins ({grid.space}), T = "
                       f"{temperature.temperature:.4f} minimising the mean -ln p(true bin), same weights.")
        # Then the PIT map (calibration_fit.fit_pit_map): the CDF of each p(z) through the CDF of the
        # validation PITs, so that their PITs are uniform (docs/pz.md).
        from ...calibration import TemperatureCalibration
        from ..calibration_fit import fit_pit_map
        from ..pz_metrics import pit_values, usable_rows
        pz_t = temperature.probabilities(p["output"])
        usable = usable_rows(pz_t, grid, p["z_true"])              # the rows pit_values returns
        pit = pit_values(pz_t, grid, p["z_true"])
        temperature = TemperatureCalibration(temperature.temperature, fit_pit_map(
            pit, None if weights is None else weights[usable]))
        history.append(f"p(z): then its CDF mapped through the CDF of the {pit.size} validation PITs (the "
                       f"PIT quantiles at {len(temperature.pit_knots) - 1} levels, PZPITkk), same weights.")
    write_calibration(regen.work / "calibration.fits", beta, scale, "SIMULATION", overwrite=True, pz=temperature,
                      history=history)
    log.info("calibration fitted %s", how)
    summ = calibrated_summary(beta, p["mean"], p["sigma"])
    _, _, _, p_alt = pz_of_set(regen, p, CalibrationFile(beta=beta, scale=scale, method="beta", pz=temperature))
    th, why = choose_thresholds(summ["Z"], summ["ZERR"], p["z_true"], p["snr_gi"], p["features"],
                                train_feature_sample(regen), regen.cfg.z_min, regen.cfg.z_max, p_alt=p_alt,
                                weights=weights)
    write_thresholds(regen.work / "thresholds.fits", th, "SIMULATION", history=why, overwrite=True)
    regen.save_json("thresholds_why.json", why)
    log.info("thresholds: %s", " ".join(why))
