"""Fitting the calibrations the stage applies (``csst_sls_z.calibration``) on a validation set.

``fit_beta`` and ``fit_scale`` (the Gaussian calibrations of the BNN's predictive distribution),
``fit_temperature`` and ``fit_pit_map`` (the binned p(z)), with the PIT, the weighted quantile and
the reliability curve they use. Used by the regeneration's calibrate step and the studies; the
stage never imports this module. Why each method and fitting choice: docs/pz.md, "How the
calibrations are fitted".
"""
from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit, ndtr

from ..calibration import LEVEL_68, Q_68, BetaCalibration, ScaleCalibration, TemperatureCalibration, _log_softmax

log = logging.getLogger(__name__)


def _ignored_level(ok) -> int:
    """Objects without survey weight (outside the test n(z)) are expected: a warning only when
    more than a tenth of the fit set is left out."""
    return logging.WARNING if (~ok).mean() > 0.1 else logging.INFO

F_CLIP = 1e-12              # PIT clipping used for fitting (keeps ln F, ln(1-F) finite)

AB_MIN = 1e-3               # lower bound on a, b: keeps G strictly increasing

MAX_THRESHOLDS = 20000      # larger validation sets use evenly spaced ranks as thresholds

MIN_FIT_OBJECTS = 10

def pit(mean, sigma, z_true):
    """PIT values F = Phi((z_true - mean) / sigma) (sigma must be > 0)."""
    mean, sigma, z_true = (np.asarray(x, dtype=float) for x in (mean, sigma, z_true))
    with np.errstate(divide="ignore", invalid="ignore"):
        return ndtr((z_true - mean) / sigma)

def _valid_standardised(mean, sigma, z_true, weights=None):
    """((z_true - mean) / sigma, normalised weights) for the usable objects.

    Usable: all finite, sigma > 0, and (with weights) a finite weight > 0. Without
    weights every usable object weighs the same.
    """
    mean, sigma, z_true = np.broadcast_arrays(*(np.asarray(x, dtype=float).ravel()
                                                for x in (mean, sigma, z_true)))
    ok = np.isfinite(mean) & np.isfinite(sigma) & np.isfinite(z_true) & (sigma > 0)
    if weights is None:
        w = np.ones(mean.shape)
    else:
        w = np.asarray(weights, dtype=float).ravel()
        if w.shape != mean.shape:
            raise ValueError(f"calibration weights have {w.size} values for {mean.size} objects")
        with np.errstate(invalid="ignore"):
            ok &= np.isfinite(w) & (w > 0)
    if (~ok).any():
        log.log(_ignored_level(ok), "calibration fit: ignoring %d of %d objects with non-finite values, "
                "sigma <= 0 or no weight", int((~ok).sum()), ok.size)
    if ok.sum() < MIN_FIT_OBJECTS:
        raise ValueError(f"calibration fit needs at least {MIN_FIT_OBJECTS} usable objects, "
                         f"got {int(ok.sum())}")
    return (z_true[ok] - mean[ok]) / sigma[ok], w[ok] / w[ok].sum()

def weighted_quantile(values, weights, q: float) -> float:
    """The q-quantile of ``values`` under ``weights``, interpolated linearly.

    The sorted values sit at plotting positions (C_k - w_k) / (C_n - w_n) (C the cumulative
    weight), which for equal weights are k / (n - 1): numpy's default quantile exactly.
    """
    order = np.argsort(values, kind="stable")
    v, w = np.asarray(values, dtype=float)[order], np.asarray(weights, dtype=float)[order]
    if v.size == 1:
        return float(v[0])
    c = np.cumsum(w)
    return float(np.interp(q, (c - w) / (c[-1] - w[-1]), v))

def effective_sample_size(weights) -> float:
    """Kish's effective number of objects, (sum w)^2 / sum w^2."""
    w = np.asarray(weights, dtype=float)
    return float(w.sum() ** 2 / np.sum(w * w))

def fit_beta(mean, sigma, z_true, prescale: bool = True, weights=None,
             match_central: bool | None = None) -> BetaCalibration:
    """Fit the calibration map on a validation set (see module doc).

    prescale=True (default): first set ``scale`` to the robust width of the standardised
    residuals (the 68.27% quantile of |z_true - mean| / sigma), then fit a, b, c by the
    binomial log-loss on the rescaled PITs. prescale=False: pure Beta calibration (scale = 1).
    weights: optional per-object weights (module doc); None weighs every object the same.
    match_central: finally rescale so the central 68.27% interval covers exactly that
    fraction of the fit set (module doc); default: when ``prescale``.
    """
    t, w = _valid_standardised(mean, sigma, z_true, weights)
    scale = weighted_quantile(np.abs(t), w, LEVEL_68) if prescale else 1.0
    if not (np.isfinite(scale) and scale > 0):      # e.g. more than 68% exact hits
        log.warning("fit_beta: robust width %r unusable, falling back to scale = 1", scale)
        scale = 1.0
    F = np.clip(ndtr(t / scale), F_CLIP, 1.0 - F_CLIP)
    order = np.argsort(F, kind="stable")
    F, w = F[order], w[order]
    n = F.size
    # Thresholds at the observed PITs; label fraction = (weighted) empirical CDF there
    # (ties: count all <=); n / (n + 1) keeps the top label below 1, as unweighted.
    idx = np.arange(n) if n <= MAX_THRESHOLDS else np.linspace(0, n - 1, MAX_THRESHOLDS).astype(int)
    p = F[idx]
    y = np.cumsum(w)[np.searchsorted(F, p, side="right") - 1] * n / (n + 1.0)
    lp, l1p = np.log(p), np.log1p(-p)
    # Each threshold stands for the objects' weights near it, so the tails keep their say.
    tw = w[idx] / w[idx].mean()

    def loss_grad(theta):
        a, b, c = theta
        s = c + a * lp - b * l1p
        # -[y ln expit(s) + (1-y) ln expit(-s)], weighted mean over thresholds
        loss = -np.mean(tw * (y * log_expit(s) + (1.0 - y) * log_expit(-s)))
        r = tw * (expit(s) - y)                   # d loss / d s
        grad = np.array([np.mean(r * lp), -np.mean(r * l1p), np.mean(r)])
        return loss, grad

    res = minimize(loss_grad, x0=np.array([1.0, 1.0, 0.0]), jac=True, method="L-BFGS-B",
                   bounds=[(AB_MIN, None), (AB_MIN, None), (None, None)])
    if not res.success:
        log.warning("fit_beta: optimiser did not report success (%s); using its last parameters",
                    res.message)
    calib = BetaCalibration(*res.x, scale=scale)
    if prescale if match_central is None else match_central:
        calib = _match_central_interval(calib, t, w[np.argsort(order)])
    log.info("fit_beta on %d objects: a=%.4f b=%.4f c=%.4f scale=%.4f",
             n, calib.a, calib.b, calib.c, calib.scale)
    return calib

def _match_central_interval(calib: BetaCalibration, t, w) -> BetaCalibration:
    """Rescale ``calib`` so its central 68.27% interval holds that weighted fraction of ``t``.

    t: standardised residuals (z_true - mean) / sigma; w: their normalised weights. The
    calibrated bounds are s * u_lo and s * u_hi (u from the Beta part alone), so object i
    is inside for s >= s_i = max(t_i / u_hi, t_i / u_lo, 0).
    """
    unit = BetaCalibration(calib.a, calib.b, calib.c, 1.0)
    u_lo, u_hi = unit._inverse_x(np.array(Q_68))
    if not (u_lo < 0 < u_hi):          # an interval that excludes the mean itself: leave it
        log.warning("fit_beta: central interval (%.3g, %.3g) does not straddle the mean; not matched", u_lo, u_hi)
        return calib
    s_needed = np.maximum(np.maximum(t / u_hi, t / u_lo), 0.0)
    scale = weighted_quantile(s_needed, w, LEVEL_68)
    if not (np.isfinite(scale) and scale > 0):
        return calib
    return BetaCalibration(calib.a, calib.b, calib.c, scale)

def fit_scale(mean, sigma, z_true, method: str = "nll", weights=None) -> ScaleCalibration:
    """Fit sigma' = scale * sigma on a validation set.

    method='nll' (default): Gaussian maximum likelihood, scale^2 = mean(((z - mean) / sigma)^2);
    closed form and uses every object. method='coverage68': the scale making the central
    68.27% interval cover exactly that fraction (robust to catastrophic outliers).
    weights: optional per-object weights (module doc).
    """
    t, w = _valid_standardised(mean, sigma, z_true, weights)
    if method == "nll":
        scale = float(np.sqrt(np.sum(w * t * t)))
    elif method == "coverage68":
        scale = weighted_quantile(np.abs(t), w, LEVEL_68)
    else:
        raise ValueError(f"unknown fit_scale method {method!r} (use 'nll' or 'coverage68')")
    log.info("fit_scale (%s) on %d objects: scale=%.4f", method, t.size, scale)
    return ScaleCalibration(scale)

def reliability_curve(F_values, n_bins: int = 20, kind: str = "central"):
    """Points of the reliability diagram (paper Fig. 10).

    expected_fraction = linspace(0, 1, n_bins + 1), the confidence levels.
    kind='central' (default, as in the authors' code): observed fraction of PITs inside
    the central interval of that level, |F - 0.5| <= level / 2.
    kind='cdf': observed fraction with F <= level (one-sided).
    Non-finite F are ignored. Pass G(F) to judge a Beta-calibrated distribution.
    Returns (expected_fraction, observed_fraction), float arrays of length n_bins + 1.
    """
    F = np.asarray(F_values, dtype=float).ravel()
    F = F[np.isfinite(F)]
    expected = np.linspace(0.0, 1.0, int(n_bins) + 1)
    if F.size == 0:
        return expected, np.full(expected.shape, np.nan)
    Fs = np.sort(F)
    if kind == "central":
        dev = np.sort(np.abs(Fs - 0.5))
        # tiny tolerance so that level 1 includes F exactly 0 or 1 despite rounding
        observed = np.searchsorted(dev, expected / 2.0 + 1e-15, side="right") / F.size
    elif kind == "cdf":
        observed = np.searchsorted(Fs, expected, side="right") / F.size
    else:
        raise ValueError(f"unknown reliability kind {kind!r} (use 'central' or 'cdf')")
    return expected, observed.astype(float)

TEMPERATURE_BOUNDS = (0.05, 20.0)    # the fit searches ln T between the logs of these

PIT_MAP_LEVELS = 40          # K: knots at the PIT quantiles 0, 1/K, ..., 1

def fit_pit_map(pit, weights=None, levels: int = PIT_MAP_LEVELS) -> tuple:
    """The knots x_k (k = 0..levels) of g: the (weighted) quantiles of the validation PITs at
    k/levels, with x_0 = 0 and x_K = 1, made strictly increasing (blended with 1e-6 of the
    identity, so that a run of equal PITs cannot stop g from being a function)."""
    pit = np.asarray(pit, dtype=np.float64)
    w = np.ones(pit.size) if weights is None else np.asarray(weights, dtype=np.float64)
    ok = np.isfinite(pit) & np.isfinite(w) & (w > 0)
    if ok.sum() < 2 * levels:
        raise ValueError(f"fit_pit_map: {ok.sum()} usable PIT values, fewer than {2 * levels}")
    order = np.argsort(pit[ok], kind="stable")
    ps, ws = pit[ok][order], w[ok][order]
    cw = (np.cumsum(ws) - 0.5 * ws) / ws.sum()
    u = np.linspace(0.0, 1.0, levels + 1)
    x = np.clip(np.interp(u, cw, ps), 0.0, 1.0)
    x[0], x[-1] = 0.0, 1.0
    x = np.maximum.accumulate(x) * (1 - 1e-6) + u * 1e-6
    x[0], x[-1] = 0.0, 1.0
    return tuple(float(v) for v in x)

def fit_temperature(logits, truth_bin, weights=None, bounds=TEMPERATURE_BOUNDS) -> TemperatureCalibration:
    """The temperature minimising the weighted mean -ln p_T(truth bin) over a validation set.

    logits: (N, B) backbone output; truth_bin: (N,) index of the bin holding the true redshift,
    negative where the truth is off the grid (those objects are left out); weights: optional
    per-object weights (as in ``fit_beta``: the survey's n(z) over the training one).
    """
    from scipy.optimize import minimize_scalar
    logits = np.asarray(logits, dtype=np.float64)
    truth_bin = np.asarray(truth_bin, dtype=np.int64).ravel()
    if logits.ndim != 2 or logits.shape[0] != truth_bin.size:
        raise ValueError(f"fit_temperature needs (N, B) logits and N truth bins, got {logits.shape} "
                         f"and {truth_bin.size}")
    w = np.ones(truth_bin.size) if weights is None else np.asarray(weights, dtype=float).ravel()
    with np.errstate(invalid="ignore"):
        ok = ((truth_bin >= 0) & (truth_bin < logits.shape[1]) & np.all(np.isfinite(logits), axis=1)
              & np.isfinite(w) & (w > 0))
    if ok.sum() < MIN_FIT_OBJECTS:
        raise ValueError(f"temperature fit needs at least {MIN_FIT_OBJECTS} usable objects, got {int(ok.sum())}")
    if (~ok).any():
        log.log(_ignored_level(ok), "fit_temperature: ignoring %d of %d objects off the grid, with non-finite "
                "logits or no weight", int((~ok).sum()), ok.size)
    logits, truth_bin, w = logits[ok], truth_bin[ok], w[ok] / w[ok].sum()
    rows = np.arange(truth_bin.size)

    def nll(log_t):
        return -float(np.sum(w * _log_softmax(logits, np.exp(log_t))[rows, truth_bin]))

    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-5})
    t = float(np.exp(res.x))
    if min(abs(res.x - lo), abs(res.x - hi)) < 1e-3:
        log.warning("fit_temperature: T = %.4g is at the edge of the search range %s", t, bounds)
    log.info("fit_temperature on %d objects: T=%.4f (mean -ln p: %.4f at T=1, %.4f at T)",
             truth_bin.size, t, nll(0.0), float(res.fun))
    return TemperatureCalibration(t)
