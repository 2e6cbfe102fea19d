"""Step ``refine``: the template refinement's reference file (docs/refinement.md).

Its basis comes from the source set's sedlib (the REDROCK2016 PCA vectors and the KCORRECT
templates, orthonormalised; ``training.refine_basis``), its instrument numbers from the
instrument file, and its one fitted number, the temperature of the refined posterior, from the
validation set: the T at which the refined central 68% intervals cover 68% of the true
redshifts (``training.refine_calibration.fit_temperature``). The refinement runs here on the
network's input grid (the validation spectra are simulated on it), with the network's
calibrated p(z) and Z, as the stage runs it on a product's pixels.

Also :func:`refine_set`, which evaluation uses on the test and family sets.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

# Validation objects the temperature is fitted on (the first N of the fixed realisation): enough
# for a coverage known to +-0.007, and a minute of refinement on 2 cores.
N_TEMPERATURE_FIT = 5000


def grid_bands(x: np.ndarray, grid) -> dict:
    """``{'GV': BandData, 'GI': BandData}`` of network inputs ``x`` (N, L, 2) on ``grid``: the
    pixels the refinement reads, masked pixels (0 in both channels) left out."""
    from ...products.reader import BandData
    n = x.shape[0]
    bands = {}
    for band in grid.bands:
        lo = grid.offset(band)
        size = grid.sizes[grid.bands.index(band)]
        flux = np.asarray(x[:, lo:lo + size, 0], dtype=np.float64)
        err = np.asarray(x[:, lo:lo + size, 1], dtype=np.float64)
        keep = err > 0
        counts = keep.sum(axis=1)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        wave = np.broadcast_to(grid.centres(band), (n, size))
        bands[band] = BandData(wave=np.ascontiguousarray(wave[keep]), flux=np.ascontiguousarray(flux[keep]),
                               err=np.ascontiguousarray(err[keep]), offsets=offsets, present=counts > 0)
    return bands


def refine_set(regen, name: str, model, n: int | None = None, data=None, x=None, predictions=None, snr_gi=None):
    """(Refinement, network summary, z_true) of the first ``n`` objects of set ``name`` (or of ``x``
    with ``predictions``: {mean, sigma, z_cnn, features, output}, ``data`` a TrainingSet and
    ``snr_gi`` its GI SNR), measured as the stage measures: the network's calibrated Z and p(z)
    (``measure.measure_network``), then ``refine.refine`` on the instrument's pixels, each
    posterior at the temperature of its GI SNR."""
    from ...measure import measure_network
    from ...network.objectives import objective_of
    from ...pz import PzGrid, PzMaker
    from ...refine import refine
    from ...reffiles.tables import load_calibration, load_thresholds
    from .calibrate import network_config
    from .data import fixed, fixed_snr_gi
    from .predict import predict_set
    if x is None:
        p = predict_set(regen, name)
        # The refinement reads measured pixels, as in the stage: the instrument's, with the
        # noise the network saw (the same seed; rebinning comes after the noise).
        x, z_true = fixed(regen, name, native=True)
        snr_gi = fixed_snr_gi(regen, name)
    else:
        p, z_true = predictions, np.asarray(data.z, dtype=float)
    n = len(z_true) if n is None else min(int(n), len(z_true))
    cfg = network_config(regen)
    cal = load_calibration(regen.work / "calibration.fits")
    maker = PzMaker(PzGrid.from_config(cfg), objective_of(cfg).binned, cal)
    out = p.get("output")
    m = measure_network(mean=p["mean"][:n], sigma=p["sigma"][:n], z_cnn=p["z_cnn"][:n],
                        features=p["features"][:n], output=None if out is None else out[:n], pz_maker=maker,
                        calibration=cal, thresholds=load_thresholds(regen.work / "thresholds.fits"))
    bands = grid_bands(x[:n], regen.native_grid)
    snr = None if snr_gi is None else np.asarray(snr_gi)[:n]
    return (refine(bands, m.pz, maker.grid, m.summary["Z"], model, snr_gi=snr), m.summary,
            np.asarray(z_true[:n], dtype=float))


def run(regen):
    from ...reffiles.refinement import write_refinement
    from dataclasses import replace
    from ...measure import refined_summary
    from ...refine import STATUS_OK
    from ..metrics import coverage
    from ..refine_basis import build_refinement_model
    from ..refine_calibration import fit_temperatures_by_snr
    from .data import fixed_snr_gi
    model = build_refinement_model(regen.sedlib, regen.instrument)
    r, network, z_true = refine_set(regen, "val", model, N_TEMPERATURE_FIT)
    snr_gi = fixed_snr_gi(regen, "val")[:z_true.size]
    fit = fit_temperatures_by_snr(r, z_true, snr_gi)
    temperature = fit["temperature"]
    model = model.replace(temperature=temperature, temperature_snr_edges=fit["edges"],
                          temperatures_by_snr=fit["temperatures"])
    r.posterior = replace(r.posterior, temperature=model.temperature_for(snr_gi))
    s, _ = refined_summary(network, r)          # as the stage writes them
    record = {"n": int(z_true.size), "temperature": temperature, "snr_edges": list(fit["edges"]),
              "temperatures_by_snr": list(fit["temperatures"]), "n_by_snr": fit["n"],
              "ran": float(np.mean(r.status == STATUS_OK)),
              "window_edge": float(np.mean(r.status == 2)), "not_run": float(np.mean(r.status == 1)),
              "cov68": coverage(z_true, s["Z_LO"], s["Z_HI"]), "cov95": coverage(z_true, s["Z_LO95"], s["Z_HI95"])}
    regen.save_json("refinement.json", record)
    write_refinement(regen.work / "refinement.fits", model, "SIMULATION", overwrite=True, history=[
        f"Basis: sedlib {', '.join(model.libraries)}, orthonormalised (training.refine_basis).",
        f"Temperature {temperature:.4g}: refined 68% intervals cover 68% of the first {z_true.size} "
        f"validation objects (regenerate, step refine); by GI SNR bin (edges "
        f"{', '.join(f'{e:g}' for e in fit['edges'])}): {', '.join(f'{v:.4g}' for v in fit['temperatures'])}.",
        f"Validation: cov68 {record['cov68']:.3f}, cov95 {record['cov95']:.3f}, refined {record['ran']:.1%}."])
    log.info("refinement: T %.4g, cov68 %.3f, cov95 %.3f, refined %.1f%%", temperature, record["cov68"],
             record["cov95"], 100 * record["ran"])
