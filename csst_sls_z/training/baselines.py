"""Baselines the network is scored against: the information bound (oracle) and a template fit.

* ``oracle_redshifts``: for every test spectrum, a chi-square scan over z with the object's
  own noiseless SED and shape from TRUTH, rendered through the same forward model, leaving
  only z and a positive amplitude free, on the same noisy pixels. No method can beat it on
  average: it is the information bound of the spectra.
* ``template_fit_redshifts``: the classical fit, a free linear mixture of the whole SED
  library (the 5 Redrock PCA vectors and the 5 kcorrect templates), rendered for a typical
  galaxy shape, scanned over z.

Both scan a coarse grid (step 0.004) and refine around the best value (step 0.0005).
Used by the test-set evaluation (``evaluate``), the per-family and shifted sets
(``evaluate_generalisation``) and the studies.
"""
from __future__ import annotations

import numpy as np

from ..simulation.population import Population
from ..simulation.simulate import simulate_spectra
from .metrics import outlier_fraction, sigma_nmad

COARSE_STEP = 0.004
FINE_STEP = 0.0005
FINE_HALF = 0.008


def _replicate(pop: Population, i: int, z: np.ndarray) -> Population:
    fields = {k: np.repeat(getattr(pop, k)[i:i + 1], z.size, axis=0) for k in pop.__dict__}
    fields["z"] = z
    return Population(**fields)


def _render(pop, instrument, sedlib, **kw):
    sim = simulate_spectra(pop, instrument, sedlib, np.random.default_rng(0), noise=False, **kw)
    return np.concatenate([sim.bands["GV"].model, sim.bands["GI"].model], axis=1).astype(np.float64)


def _chi2_positive(models, flux, w):
    """chi^2 of ``flux`` against each row of ``models`` with a free non-negative amplitude."""
    tf_ = models @ (w * flux)
    tt = (models * models) @ w
    base = np.sum(w * flux * flux)
    amp_ok = (tf_ > 0) & (tt > 0)
    return np.where(amp_ok, base - tf_ ** 2 / np.where(tt > 0, tt, 1.0), base)


def oracle_redshifts(truth: Population, flux, err, instrument, sedlib, z_max, progress=True):
    from tqdm import tqdm
    out = np.empty(flux.shape[0])
    coarse = np.arange(0.0, z_max + 1e-9, COARSE_STEP)
    for i in tqdm(range(flux.shape[0]), desc="oracle", disable=not progress):
        w = np.where(err[i] > 0, 1.0 / np.where(err[i] > 0, err[i], 1.0) ** 2, 0.0)
        chi = _chi2_positive(_render(_replicate(truth, i, coarse), instrument, sedlib), flux[i], w)
        z0 = coarse[np.argmin(chi)]
        fine = np.arange(max(0.0, z0 - FINE_HALF), min(z_max, z0 + FINE_HALF) + 1e-9, FINE_STEP)
        chi = _chi2_positive(_render(_replicate(truth, i, fine), instrument, sedlib), flux[i], w)
        out[i] = fine[np.argmin(chi)]
    return out


def _template_models(z_grid, instrument, sedlib, shape):
    """(n_z, K, L) noiseless renderings of every library vector at each z, for one typical shape."""
    vectors = np.concatenate([sedlib.basis[lib] for lib in sorted(sedlib.basis)])
    k = vectors.shape[0]
    zz = np.repeat(z_grid, k)
    pop = Population(z=zz, mag=np.full(zz.size, 20.0), r_eff=np.full(zz.size, shape["r_eff"]),
                     sersic_n=np.full(zz.size, shape["sersic_n"]), axis_ratio=np.full(zz.size, shape["axis_ratio"]),
                     pa=np.full(zz.size, shape["pa"]), sed_lib=np.full(zz.size, "TEMPLATE"),
                     sed_index=np.full(zz.size, -1), sed_coeff=np.zeros((zz.size, 5)))
    rest = np.tile(vectors, (z_grid.size, 1))
    models = _render(pop, instrument, sedlib, rest_flux=rest, amplitude=np.ones(zz.size))
    return models.reshape(z_grid.size, k, -1)


def _linear_chi2(models, flux, w):
    """chi^2 of the best free linear mixture, for every object (rows of flux) at one z."""
    k = models.shape[0]
    wf = w * flux
    b = wf @ models.T                                       # (N, K)
    pair = (models[:, None, :] * models[None, :, :]).reshape(k * k, -1)
    g = (w @ pair.T).reshape(-1, k, k) + 1e-12 * np.eye(k)[None]
    c = np.linalg.solve(g, b[..., None])[..., 0]
    return np.sum(wf * flux, axis=1) - np.sum(c * b, axis=1)


def template_fit_redshifts(flux, err, instrument, sedlib, z_max, shape, progress=True):
    from tqdm import tqdm
    w = np.where(err > 0, 1.0 / np.where(err > 0, err, 1.0) ** 2, 0.0)
    coarse = np.arange(0.0, z_max + 1e-9, COARSE_STEP)
    models = _template_models(coarse, instrument, sedlib, shape)
    chi = np.stack([_linear_chi2(models[j], flux, w) for j in tqdm(range(coarse.size), desc="template fit",
                                                                      disable=not progress)], axis=1)
    z0 = coarse[np.argmin(chi, axis=1)]
    offsets = np.arange(-FINE_HALF, FINE_HALF + 1e-9, FINE_STEP)
    out = np.empty(flux.shape[0])
    # Refine on a shared fine grid per coarse cell to render each fine z only once.
    for zc in np.unique(z0):
        sel = np.where(z0 == zc)[0]
        fine = np.clip(zc + offsets, 0.0, z_max)
        fm = _template_models(fine, instrument, sedlib, shape)
        chi_f = np.stack([_linear_chi2(fm[j], flux[sel], w[sel]) for j in range(fine.size)], axis=1)
        out[sel] = fine[np.argmin(chi_f, axis=1)]
    return out


def point_metrics(z_pred, z_true):
    return {"sigma_nmad": sigma_nmad(z_pred, z_true), "eta": outlier_fraction(z_pred, z_true), "n": int(z_true.size)}
