"""Will it work on data we did not simulate? Every regeneration answers with numbers.

* ``families``: a nominal test set of each SED family of the run (CSST-like n(z)), scored
  with the calibrated BNN, beside that family's own information bound (the oracle: a
  chi-square scan with each object's true SED, on the same noisy pixels).
* ``shifts``: the all-family test population with one instrument parameter at a time at
  the edge of its training range and 1.5 times as far from nominal ("beyond").
* on every set: overall, in z bins and at GI SNR > 3; the calibrated 68% / 95% coverage;
  the flags: the share kept (ZWARN == 0), eta among the kept, and the completeness of
  ZWARN != 0 among the catastrophic outliers (|dz| / (1 + z) > 0.02, OUTLIER_DZ below).

evaluation.json keys: ``generalisation.families.<NAME>``, ``generalisation.shifts.<param>.
{edge,beyond}``, each a :func:`score_set` record (docs/validation.md documents them).
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np

from ..simulation.simulate import TRAINING_VARIATIONS, SimOptions, band_snr
from .metrics import binned, coverage, outlier_fraction, sigma_nmad

log = logging.getLogger(__name__)

Z_EDGES = np.array([0.0, 0.3, 0.5, 0.7, 0.9, 1.2, 1.5])
HIGH_SNR = 3.0
OUTLIER_DZ = 0.02          # catastrophic outlier for the flag completeness (the flags' definition)
SHIFT_FACTOR = 1.5         # "beyond": 1.5 times the training range's distance from nominal


def shifted_options(nominal_resolution: float | None = None) -> dict:
    """{param: {"edge": SimOptions, "beyond": SimOptions}} from the training ranges.

    One side of each range: the side that hurts (lower R, a stretched dispersion, ERR
    underestimated, a red tilt); the morphology kernel has no "beyond".
    """
    t = TRAINING_VARIATIONS
    if nominal_resolution is None:
        from ..simulation.instrument import INSTRUMENT_PARAMETERS
        nominal_resolution = INSTRUMENT_PARAMETERS["GI_R"][0]
    nominal = {"resolution_range": float(nominal_resolution), "disp_scale_range": 1.0, "err_scale_range": 1.0, "flux_tilt_range": 0.0}
    edge = {"resolution_range": t.resolution_range[0], "disp_scale_range": t.disp_scale_range[1],
            "err_scale_range": t.err_scale_range[0], "flux_tilt_range": t.flux_tilt_range[1]}
    out = {}
    for field, e in edge.items():
        b = nominal[field] + SHIFT_FACTOR * (e - nominal[field])
        out[field.replace("_range", "")] = {"edge": replace(SimOptions(), **{field: (e, e)}),
                                            "beyond": replace(SimOptions(), **{field: (b, b)})}
    out["morph_kernel"] = {"edge": SimOptions(gauss_kernel_prob=1.0)}
    return out


def _flags(zwarn, z, zt):
    keep = zwarn == 0
    dz = np.abs(z - zt) / (1 + zt)
    bad = ~np.isfinite(dz) | (dz > OUTLIER_DZ)
    return {"kept": float(keep.mean()),
            "eta_kept": outlier_fraction(z[keep], zt[keep]) if keep.any() else float("nan"),
            "outliers_dz002": float(bad.mean()),
            "flag_completeness": float(np.mean(zwarn[bad] != 0)) if bad.any() else float("nan")}


def score_set(zt, snr_gi, summ, zwarn, z_cnn=None) -> dict:
    """The metrics of one test set (the calibrated summary ``summ`` of calibration.calibrated_summary)."""
    z = summ["Z"]
    hi = snr_gi > HIGH_SNR
    rec = {"n": int(zt.size), "sigma_nmad": sigma_nmad(z, zt), "eta": outlier_fraction(z, zt),
           "cov68": coverage(zt, summ["Z_LO"], summ["Z_HI"]), "cov95": coverage(zt, summ["Z_LO95"], summ["Z_HI95"]),
           "snr_gt3": {"n": int(hi.sum()),
                       "sigma_nmad": sigma_nmad(z[hi], zt[hi]) if hi.sum() > 2 else float("nan"),
                       "eta": outlier_fraction(z[hi], zt[hi]) if hi.any() else float("nan")},
           "z_bins": {"sigma_nmad": binned(sigma_nmad, zt, Z_EDGES, z, zt),
                      "eta": binned(outlier_fraction, zt, Z_EDGES, z, zt)},
           "flags": _flags(zwarn, z, zt)}
    if z_cnn is not None:
        rec["cnn"] = {"sigma_nmad": sigma_nmad(z_cnn, zt), "eta": outlier_fraction(z_cnn, zt)}
    return rec


SNR_EDGES = np.array([0.0, 1.0, 1.5, 2.0, 3.0, 5.0, 1e9])


def refined_record(zt, snr_gi, summ, failed) -> dict:
    """Metrics of the refined estimate of a set (``measure.refined_summary``), beside the network's."""
    hi = snr_gi > HIGH_SNR
    return {"sigma_nmad": sigma_nmad(summ["Z"], zt), "eta": outlier_fraction(summ["Z"], zt),
            "cov68": coverage(zt, summ["Z_LO"], summ["Z_HI"]), "cov95": coverage(zt, summ["Z_LO95"], summ["Z_HI95"]),
            "refine_failed": float(np.mean(failed)),
            "snr_gt3": {"n": int(hi.sum()), "sigma_nmad": sigma_nmad(summ["Z"][hi], zt[hi]) if hi.sum() > 2 else float("nan"),
                        "eta": outlier_fraction(summ["Z"][hi], zt[hi]) if hi.any() else float("nan")},
            "snr_bins": {"edges": SNR_EDGES[:-1].tolist(),
                         "sigma_nmad": binned(sigma_nmad, snr_gi, SNR_EDGES, summ["Z"], zt),
                         "eta": binned(outlier_fraction, snr_gi, SNR_EDGES, summ["Z"], zt),
                         "cov68": binned(coverage, snr_gi, SNR_EDGES, zt, summ["Z_LO"], summ["Z_HI"])}}


def refinement_model_for(regen, family: str | None):
    """The refinement model a set is scored with: never one whose basis holds the family scored
    (``refine_basis.LEAVE_OUT``: SPS with the sedlib basis, KCORRECT and REDROCK2016 each with the
    other plus a PCA of the run's SPS library), at the set's calibrated temperature. None where the
    run has no refinement file; ``family`` None: the set's own model (mixed sets)."""
    path = regen.work / "refinement.fits"
    if not path.exists():
        return None
    from ..reffiles.refinement import load_refinement
    model = load_refinement(path)
    if family is None or family == "SPS":
        return model
    from .refine_basis import LEAVE_OUT, leave_out_model, sps_pca_vectors
    if family not in LEAVE_OUT:
        return None
    if getattr(regen, "_sps_pca", None) is None:
        from ..simulation.sps_library import load_sps_library
        lib_path = regen.work / "sps_library.fits"
        lib = load_sps_library(lib_path) if lib_path.exists() else None
        regen._sps_pca = sps_pca_vectors(2000, regen.seeds["generalisation"], 5, regen.sedlib.wave, library=lib)
    settings = {k: getattr(model, k) for k in model.__dataclass_fields__
                if k not in ("basis", "loglam", "libraries", "resolution", "dispersion", "centre", "basis_r")}
    return leave_out_model(family, regen.sedlib, regen.instrument, sps_vectors=regen._sps_pca, **settings)


def predict_and_flag(regen, data, seed, family: str | None = None):
    """Calibrated summary, ZWARN and CNN estimate of every object of a TrainingSet, measured as the
    stage measures (``measure.measure_network``; ZWARN from ``quality.zwarn_bits``)."""
    from ..datamodel import ZWarn
    from ..measure import measure_network, zwarn_inputs
    from ..network.objectives import objective_of
    from ..preprocess import normalise
    from ..pz import PzGrid, PzMaker
    from ..quality import zwarn_bits
    from ..reffiles.tables import load_calibration, load_thresholds
    from .data import BatchMaker
    from .pz_metrics import flag_metrics, kept_eta_curve, peak_recall, pz_metrics
    maker = BatchMaker(data, seed=seed, grid_rebin=regen.rc.grid_rebin)
    flux, err = maker.noisy(np.arange(len(data)))
    # The measured pixels (SNR, NPIX and the refinement read them, as in the stage) and the
    # network's input on its grid (the same noise, rebinned where the grid is coarser).
    ok = (err > 0) & np.isfinite(err) & np.isfinite(flux)
    x = np.empty(flux.shape + (2,), dtype=np.float32)
    normalise(flux, err, ok, x)
    x_net, ok_net = maker.network_input(flux, err) if regen.rc.grid_rebin > 1 else (x, ok)
    if getattr(regen, "_generalisation_sampler", None) is None:
        regen._generalisation_sampler = regen.sampler()[0]
    sampler = regen._generalisation_sampler
    cal = load_calibration(regen.work / "calibration.fits")
    th = load_thresholds(regen.work / "thresholds.fits")
    pz_maker = PzMaker(PzGrid.from_config(sampler.cfg), objective_of(sampler.cfg).binned, cal)
    pred = sampler.predict(x_net, return_features=True, return_output=pz_maker.binned)
    m = measure_network(mean=pred.mean, sigma=pred.sigma, z_cnn=pred.z_cnn, features=pred.features,
                        output=pred.output, pz_maker=pz_maker, calibration=cal, thresholds=th)
    summ = m.summary
    gv, gi = data.band_slices
    # The SNR of the pixels scored, not of the simulator's own noise draw.
    snr_gi = band_snr(flux[:, gi], np.where(ok[:, gi], err[:, gi], 0.0))
    zwarn = zwarn_bits(zwarn_inputs(m, npix_gv=ok[:, gv].sum(1), npix_gi=ok[:, gi].sum(1), coverage=ok_net.mean(1),
                                    snr_gi=snr_gi), th)
    zt = data.z.astype(float)
    flagged = (zwarn & int(ZWarn.MULTIPLE_PEAKS)) != 0
    # The clean sample's curve (on every test set): flagged objects dropped first, then by
    # ZERR/(1+Z); ZWARN == 0 is a point of it.
    rel = np.where(zwarn == 0, summ["ZERR"] / (1.0 + summ["Z"]), np.inf)
    pz_rec = {**pz_metrics(m.pz, pz_maker.grid, zt),
              "multiple_peaks": {"threshold": th.multiple_peaks, **flag_metrics(flagged, summ["Z"], zt, m.z_alt)},
              "clean_sample_curve": kept_eta_curve(rel, summ["Z"], zt)}
    model = refinement_model_for(regen, family)
    if model is not None:
        from ..measure import refined_summary
        from ..refine import refine
        from .steps.refine import grid_bands
        r = refine(grid_bands(x, regen.native_grid), m.pz, pz_maker.grid, summ["Z"], model, snr_gi=snr_gi)
        ref_summ, failed = refined_summary(summ, r)
        pz_rec["refined"] = refined_record(zt, snr_gi, ref_summ, failed)
        pz_rec["refined"]["basis"] = list(model.libraries)
        pz_rec["refined"]["z"] = ref_summ["Z"]
        held = peak_recall(m.pz, pz_maker.grid, summ["Z"], zt, model)
        pz_rec["peak_recall"] = {"snr_gt3": float(held[snr_gi > HIGH_SNR].mean()) if (snr_gi > HIGH_SNR).any()
                                 else float("nan"), "all": float(held.mean()),
                                 "snr_bins": {"edges": SNR_EDGES[:-1].tolist(),
                                              "recall": binned(lambda h: float(np.mean(h)), snr_gi, SNR_EDGES, held)}}
    return summ, zwarn, m.z_cnn, flux, err, snr_gi, pz_rec


def _simulate(regen, n, seed, families, options):
    from ..simulation import simulate_arrays
    from .data import from_simulation
    from .steps.data import concat_sets, concat_truth
    sims, sets = [], []
    for c, start in enumerate(range(0, n, 20000)):
        sim = simulate_arrays(min(20000, n - start), seed * 1000 + c, "test", regen.instrument, families, options)
        sims.append(sim)
        sets.append(from_simulation(sim, regen.instrument))
    return concat_sets(sets), concat_truth(sims)


def evaluate_generalisation(regen) -> dict:
    from .baselines import oracle_redshifts, point_metrics
    rc = regen.rc
    if rc.n_family_test <= 0:
        return {}
    t0 = time.time()
    base = regen.seeds["generalisation"]
    out = {"families": {}, "shifts": {}, "definitions": {
        "high_snr": HIGH_SNR, "outlier_dz_for_flags": OUTLIER_DZ, "shift_factor": SHIFT_FACTOR,
        "z_edges": Z_EDGES.tolist(), "n_per_set": rc.n_family_test, "n_oracle_per_family": rc.n_family_oracle}}
    for k, name in enumerate(regen.families().names):
        fam = regen.families(only=name)
        data, truth = _simulate(regen, rc.n_family_test, base + 10 * k, fam, SimOptions())
        summ, zwarn, z_cnn, flux, err, snr_gi, pz_rec = predict_and_flag(regen, data, base + 10 * k + 1, name)
        z_refined = pz_rec.get("refined", {}).pop("z", None)
        rec = score_set(data.z.astype(float), snr_gi, summ, zwarn, z_cnn)
        if "peak_recall" in pz_rec:
            rec["peak_recall"] = pz_rec.pop("peak_recall")
        if "refined" in pz_rec:
            rec["refined"] = pz_rec.pop("refined")
            rec["snr_bins"] = {"edges": SNR_EDGES[:-1].tolist(),
                               "sigma_nmad": binned(sigma_nmad, snr_gi, SNR_EDGES, summ["Z"], data.z.astype(float)),
                               "eta": binned(outlier_fraction, snr_gi, SNR_EDGES, summ["Z"], data.z.astype(float))}
        rec["pz"] = pz_rec
        n_or = min(rc.n_family_oracle, len(data))
        if n_or > 0:
            from ..simulation.population import Population
            sub = Population(**{f: getattr(truth, f)[:n_or] for f in truth.__dict__})
            z_or = oracle_redshifts(sub, flux[:n_or], err[:n_or], regen.instrument, fam, regen.cfg.z_max,
                                    regen.progress)
            zt = data.z[:n_or].astype(float)
            hi = snr_gi[:n_or] > HIGH_SNR
            rec["oracle"] = point_metrics(z_or, zt)
            rec["oracle"]["snr_gt3"] = point_metrics(z_or[hi], zt[hi]) if hi.sum() > 2 else {}
            rec["bnn_on_oracle_subset"] = point_metrics(summ["Z"][:n_or], zt)
            rec["bnn_on_oracle_subset"]["snr_gt3"] = point_metrics(summ["Z"][:n_or][hi], zt[hi]) if hi.sum() > 2 else {}
            rec["oracle"]["snr_bins"] = {"sigma_nmad": binned(sigma_nmad, snr_gi[:n_or], SNR_EDGES, z_or, zt),
                                         "eta": binned(outlier_fraction, snr_gi[:n_or], SNR_EDGES, z_or, zt)}
            if z_refined is not None:
                rec["refined_on_oracle_subset"] = point_metrics(z_refined[:n_or], zt)
                rec["refined_on_oracle_subset"]["snr_gt3"] = (point_metrics(z_refined[:n_or][hi], zt[hi])
                                                              if hi.sum() > 2 else {})
        out["families"][name] = rec
        log.info("family %s: sigma_NMAD %.5f eta %.3f cov68 %.3f", name, rec["sigma_nmad"], rec["eta"], rec["cov68"])
    for j, (param, sides) in enumerate(shifted_options(regen.instrument["GI"].resolution).items()):
        out["shifts"][param] = {}
        for side, options in sides.items():
            seed = base + 1000 + 10 * j + (side == "beyond")
            data, _ = _simulate(regen, rc.n_family_test, seed, regen.families(), options)
            summ, zwarn, z_cnn, _, _, snr_gi, pz_rec = predict_and_flag(regen, data, seed + 5)
            rec = score_set(data.z.astype(float), snr_gi, summ, zwarn, z_cnn)
            if "refined" in pz_rec:
                pz_rec["refined"].pop("z", None)
                rec["refined"] = pz_rec.pop("refined")
            rec["pz"] = pz_rec
            value = [getattr(options, f) for f in options.__dataclass_fields__
                     if getattr(options, f) != getattr(SimOptions(), f)]
            v = value[0] if value else None
            rec["value"] = round(float(v[0] if isinstance(v, tuple) else v), 4) if v is not None else None
            out["shifts"][param][side] = rec
            log.info("shift %s %s: eta %.3f cov68 %.3f", param, side, rec["eta"], rec["cov68"])
    out["wall_s"] = time.time() - t0
    return out
