"""Evaluation on the test set: cnn, bnn, the information bound (oracle) and a template fit
(``baselines``), the calibrated p(z), the clean sample, and the per-family and shifted sets
(``evaluate_generalisation``).
"""
from __future__ import annotations

import logging
import time

import numpy as np

from ..simulation.population import Population
from .baselines import oracle_redshifts, point_metrics, template_fit_redshifts
from .metrics import binned, coverage, mean_uncertainty, outlier_fraction, sigma_nmad

log = logging.getLogger(__name__)

Z_EDGES = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.5])
SNR_EDGES = np.array([0.0, 1.0, 1.5, 2.0, 3.0, 5.0, 1e9])


def evaluate(regen) -> dict:
    """All metrics and figures for a Regeneration whose calibrate step is done."""
    from ..calibration import calibrated_summary
    from ..reffiles.tables import load_calibration
    from .data import BatchMaker
    from .figures import make_figures
    t0 = time.time()
    p = regen.predict_set("test")
    zt = p["z_true"]
    cal = load_calibration(regen.work / "calibration.fits")
    cal_summ = calibrated_summary(cal.applied, p["mean"], p["sigma"])     # what the stage applies
    scale_summ = calibrated_summary(cal.scale, p["mean"], p["sigma"])
    raw_lo, raw_hi = p["mean"] - p["sigma"], p["mean"] + p["sigma"]
    res = {"cnn": point_metrics(p["z_cnn"], zt)}
    bnn = point_metrics(cal_summ["Z"], zt)
    bnn.update({
        "ebar": mean_uncertainty(cal_summ["ZERR"], zt),
        "cov68": coverage(zt, cal_summ["Z_LO"], cal_summ["Z_HI"]),
        "cov95": coverage(zt, cal_summ["Z_LO95"], cal_summ["Z_HI95"]),
        "cov68_raw": coverage(zt, raw_lo, raw_hi),
        "cov95_raw": coverage(zt, p["mean"] - 1.959964 * p["sigma"], p["mean"] + 1.959964 * p["sigma"]),
        "cov68_scale": coverage(zt, scale_summ["Z_LO"], scale_summ["Z_HI"]),
        "cov95_scale": coverage(zt, scale_summ["Z_LO95"], scale_summ["Z_HI95"]),
        "ebar_raw": mean_uncertainty(p["sigma"], zt),
    })
    res["bnn"] = bnn
    # The bound and the classical fit on the first n_oracle test objects, same noisy pixels.
    n_or = min(regen.rc.n_oracle, zt.size)
    maker = BatchMaker(regen.data()["test"], seed=regen.seeds["test"] + 17)
    flux, err = maker.noisy(np.arange(zt.size))
    flux, err = flux[:n_or], err[:n_or]
    truth = regen.data()["test_truth"]
    sub = Population(**{k: getattr(truth, k)[:n_or] for k in truth.__dict__})
    t1 = time.time()
    z_or = oracle_redshifts(sub, flux, err, regen.instrument, regen.families(), regen.cfg.z_max, regen.progress)
    t2 = time.time()
    shape = {"r_eff": 0.7, "sersic_n": 1.3, "axis_ratio": 0.6, "pa": 45.0}
    z_tf = template_fit_redshifts(flux, err, regen.instrument, regen.sedlib, regen.cfg.z_max, shape, regen.progress)
    t3 = time.time()
    res["oracle"] = point_metrics(z_or, zt[:n_or])
    res["template_fit"] = point_metrics(z_tf, zt[:n_or])
    res["same_subset"] = {"n": n_or, "cnn": point_metrics(p["z_cnn"][:n_or], zt[:n_or]),
                          "bnn": point_metrics(cal_summ["Z"][:n_or], zt[:n_or])}
    snr = p["snr_gi"]
    preds = {"cnn": p["z_cnn"], "bnn": cal_summ["Z"]}
    refined = refined_test_set(regen, zt)
    if refined is not None:
        ref_summ, res["refined"] = refined
        preds["refined"] = ref_summ["Z"]
        res["same_subset"]["refined"] = point_metrics(ref_summ["Z"][:n_or], zt[:n_or])
    res["bins"] = {}
    for axis, x, edges in (("z_true", zt, Z_EDGES), ("snr_gi", snr, SNR_EDGES)):
        block = {}
        for m, v in preds.items():
            block[m] = {"sigma_nmad": binned(sigma_nmad, x, edges, v, zt), "eta": binned(outlier_fraction, x, edges, v, zt)}
        for m, v in (("oracle", z_or), ("template_fit", z_tf)):
            block[m] = {"sigma_nmad": binned(sigma_nmad, x[:n_or], edges, v, zt[:n_or]),
                        "eta": binned(outlier_fraction, x[:n_or], edges, v, zt[:n_or])}
        block["bnn"]["ebar"] = binned(mean_uncertainty, x, edges, cal_summ["ZERR"], zt)
        block["bnn"]["cov68"] = binned(coverage, x, edges, zt, cal_summ["Z_LO"], cal_summ["Z_HI"])
        if refined is not None:
            block["refined"]["cov68"] = binned(coverage, x, edges, zt, ref_summ["Z_LO"], ref_summ["Z_HI"])
        res["bins"][axis] = block
    res["wall_s"] = {"total": time.time() - t0, "oracle": t2 - t1, "template_fit": t3 - t2}
    res["backbone_histories"] = regen.load_json("backbone_histories.json", {})
    res["calibration"] = {"beta": cal.beta.to_dict(), "scale": cal.scale.to_dict()}
    if cal.pz is not None:
        res["calibration"]["pz"] = cal.pz.to_dict()
    res["pz"] = pz_evaluation(regen, p, cal, cal_summ, regen.out / "figures")
    np.savez(regen.work / "eval_arrays.npz", z_true=zt, z_cnn=p["z_cnn"], z_bnn=cal_summ["Z"], zerr=cal_summ["ZERR"],
             z_lo=cal_summ["Z_LO"], z_hi=cal_summ["Z_HI"], mean=p["mean"], sigma=p["sigma"], snr_gi=snr,
             z_oracle=z_or, z_template=z_tf)
    make_figures(regen.out / "figures", res, regen.work / "eval_arrays.npz", cal)
    from .evaluate_generalisation import evaluate_generalisation
    res["generalisation"] = evaluate_generalisation(regen)
    res["wall_s"]["total"] = time.time() - t0
    log.info("evaluation: %s", {k: res[k] for k in ("cnn", "bnn", "oracle", "template_fit")})
    return res


def refined_test_set(regen, zt):
    """(refined summary, metrics) of the test set as the stage writes it (``measure.refined_summary``),
    or None where the set has no refinement file."""
    path = regen.work / "refinement.fits"
    if not path.exists():
        return None
    from ..measure import refined_summary
    from ..reffiles.refinement import load_refinement
    from .steps.refine import refine_set
    r, network, z_true = refine_set(regen, "test", load_refinement(path))
    summ, failed = refined_summary(network, r)
    rec = point_metrics(summ["Z"], zt)
    rec.update({"ebar": mean_uncertainty(summ["ZERR"], zt), "cov68": coverage(zt, summ["Z_LO"], summ["Z_HI"]),
                "cov95": coverage(zt, summ["Z_LO95"], summ["Z_HI95"]), "refine_failed": float(failed.mean()),
                "window_edge": float(np.mean(r.status == 2))})
    return summ, rec


def pz_evaluation(regen, p, cal, cal_summ, figures_dir=None) -> dict:
    """p(z), MULTIPLE_PEAKS and clean-sample metrics of a predicted set (``pz_metrics``).

    p: ``predict_set`` of the set; cal: the calibration file; cal_summ: ``calibrated_summary`` of
    it. ZWARN is made by ``quality.zwarn_bits`` with the work directory's thresholds, with full
    coverage and no repairs (what the simulated test spectra have).
    """
    from dataclasses import replace
    from ..datamodel import ZWarn
    from ..pz import PzMaker
    from ..quality import ZwarnInputs, zwarn_bits
    from ..reffiles.tables import load_thresholds
    from .pz_metrics import flag_metrics, kept_eta_curve, pz_metrics, stacked_nz
    from .steps.calibrate import pz_of_set
    zt = p["z_true"]
    z = cal_summ["Z"]
    maker, pz, z_alt, p_alt = pz_of_set(regen, p, cal)
    g = maker.grid
    out = {"kind": maker.kind, "calibrated": maker.calibrated, "method": maker.method,
           "temperature": maker.temperature.temperature if maker.temperature is not None else None,
           "grid": {"space": g.space, "z0": g.z0, "dz": g.dz, "nbin": g.nbin}}
    out.update(pz_metrics(pz, g, zt))
    if maker.temperature is not None:        # the raw softmax beside the calibrated one
        raw = PzMaker(g, maker.binned, replace(cal, pz=None))(output=p["output"])
        out["uncalibrated"] = pz_metrics(raw, g, zt)
        if maker.temperature.pit_knots is not None:    # and the temperature without the PIT map
            from ..calibration import TemperatureCalibration
            t_only = PzMaker(g, maker.binned, replace(cal, pz=TemperatureCalibration(maker.temperature.temperature)))
            out["temperature_only"] = pz_metrics(t_only(output=p["output"]), g, zt)
    th = load_thresholds(regen.work / "thresholds.fits")
    ones = np.ones(zt.size)
    zwarn = zwarn_bits(ZwarnInputs(npix_gv=ones, npix_gi=ones, coverage=ones, snr_gi=p["snr_gi"], z=z,
                                   z_lo=cal_summ["Z_LO"], z_hi=cal_summ["Z_HI"], zerr=cal_summ["ZERR"],
                                   ood_distance=th.ood_distance(np.asarray(p["features"], np.float64)),
                                   p_alt=p_alt), th)
    flagged = (zwarn & int(ZWarn.MULTIPLE_PEAKS)) != 0       # the bit as quality.py sets it
    out["multiple_peaks"] = {"threshold": th.multiple_peaks, **flag_metrics(flagged, z, zt, z_alt)}
    clean = zwarn == 0
    rel = cal_summ["ZERR"] / (1.0 + z)
    out["clean_sample"] = {
        "kept": float(clean.mean()), "eta_kept": outlier_fraction(z[clean], zt[clean]) if clean.any() else None,
        "eta_all": outlier_fraction(z, zt),
        "kept_without_multiple_peaks": float(((zwarn & ~int(ZWarn.MULTIPLE_PEAKS)) == 0).mean()),
        # Kept fraction against eta, dropping the worst first by: ZERR/(1+Z); P_ALT; flagged objects
        # first, then ZERR/(1+Z) (the clean sample ZWARN == 0 is a point of this last curve).
        "curves": {"zerr": kept_eta_curve(rel, z, zt), "p_alt": kept_eta_curve(p_alt, z, zt),
                   "zwarn_then_zerr": kept_eta_curve(np.where(clean, rel, np.inf), z, zt)}}
    if figures_dir is not None:
        try:
            _pz_figure(figures_dir, g, stacked_nz(pz, g, zt), out["pit"])
        except Exception as exc:        # a figure never fails the evaluation
            log.warning("p(z) figure not made (%s)", exc)
    np.savez(regen.work / "eval_pz.npz", z_alt=z_alt, p_alt=p_alt, zwarn=zwarn)
    log.info("p(z): PIT KS %.4f, CRPS %.5f, HPD %s, n(z) |diff| %.4f; MULTIPLE_PEAKS %s; clean %s",
             out["pit"]["ks"], out["crps_mean"], out["hpd_coverage"], out["nz_abs_diff"],
             out["multiple_peaks"], {k: out["clean_sample"][k] for k in ("kept", "eta_kept")})
    return out


def _pz_figure(figures_dir, grid, nz, pit):
    """figures/pz_nz.png: stacked p(z) against the true n(z), and the PIT histogram."""
    from pathlib import Path
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    zc = grid.centres()
    width = np.diff(grid.edges())
    a.step(zc, nz["true"] / width, where="mid", label="true n(z) of the test set")
    a.plot(zc, nz["stacked"] / width, label="stacked p(z)")
    a.set_xlabel("z")
    a.set_ylabel("n(z), normalised")
    a.set_title(f"integrated |difference| {nz['abs_diff']:.3f}")
    a.legend()
    hist = np.asarray(pit["histogram"], dtype=float)
    edges = np.linspace(0, 1, hist.size + 1)
    b.stairs(hist / max(hist.sum(), 1.0) * hist.size, edges)
    b.axhline(1.0, color="k", lw=0.8)
    b.set_xlabel("PIT")
    b.set_ylabel("density")
    b.set_title(f"PIT, KS distance {pit['ks']:.3f}")
    fig.tight_layout()
    fig.savefig(figures_dir / "pz_nz.png", dpi=110)
    plt.close(fig)
