"""Calibration of the BNN's Gaussian predictive distribution.

The Bayesian head gives, per object, a Gaussian predictive distribution
N(mean, sigma^2) with sigma = sqrt(aleatoric + epistemic). Zhou et al. 2024
(ApJ 977, 69; reliability diagram in Fig. 10) find these sigmas mis-calibrated
and recalibrate them on the validation set.

Beta calibration (Kull, Silva Filho & Flach 2017, AISTATS, "Beta calibration: a
well-founded and easily implemented improvement on logistic calibration for
binary classifiers") is applied to the probability integral transform (PIT)
F = Phi((z_true - mean) / sigma) of the truth. A calibrated predictive CDF makes
F uniform; otherwise F has some CDF H, and the calibrated CDF of z is H(F(z)).
We approximate H by the Beta-calibration map

    G(F) = 1 / (1 + 1 / (exp(c) * F**a / (1 - F)**b)),
    i.e.  logit G(F) = c + a ln F - b ln(1 - F),

with a, b > 0 (so G is monotone with G(0) = 0, G(1) = 1; a = b = 1, c = 0 is the
identity), optionally applied after a width pre-scale s > 0 (below):
G(F) = B_abc(Phi(Phi^-1(F) / s)), which is still monotone with G(0) = 0, G(1) = 1
and is exactly Kull et al.'s map for s = 1. The calibrated q-quantile of z is

    z_q = mean + sigma * Phi^-1(G^-1(q)) = mean + sigma * s * Phi^-1(B_abc^-1(q)),

and because G does not depend on the object, G^-1(q) is one scalar per q; it is
found by a bracketed root search (``scipy.optimize.brentq``) in u = logit p, where
logit B is strictly increasing, so the bracket has a closed form (a == b is solved
in closed form). Work is done in logit / probit space (log_ndtr, log_expit) so
that the far tails keep their precision.

Fitting choice (``fit_beta``). a, b, c are fitted with Kull et al.'s own
estimator, logistic regression of binary labels on the features (ln p, -ln(1 - p)),
in the "binary-indicator" form of recalibrating a predictive CDF: every
validation PIT value p_j serves as a threshold, and the label of object i at that
threshold is 1[F_i <= p_j]. Summed over objects this is the binomial log-loss

    L(a, b, c) = -sum_j [ y_j ln B(p_j) + (1 - y_j) ln(1 - B(p_j)) ],
    y_j = #{F_i <= p_j} / (n + 1)   (the empirical CDF of the PITs at p_j),

minimised with L-BFGS-B under a, b >= 1e-3 (F clipped to [1e-12, 1 - 1e-12] so
the logs stay finite). Why this and not an unweighted least-squares fit of B to
the empirical CDF: the log-loss weights each residual by the inverse binomial
variance 1 / (y (1 - y)), so the tails of the PIT distribution, which set the
95% interval, count as much as they should.

Why the pre-scale (``fit_beta(..., prescale=True)``, the default): the most
common mis-calibration is a wrong width, and the three-parameter Beta family
cannot represent it well when sigma is too small. For sigmas too small by 2 the
exact map is Phi(Phi^-1(F) / 2), whose tails go as ~F**(1/4) while the Beta map's
go as F**a with the same a that has to fit the core (~0.43); the pure Beta fit then
leaves the 95% interval at ~0.92 coverage (0.91 with an unweighted fit) and the
central reliability curve up to ~0.05 off the diagonal. So ``fit_beta`` first sets
s to the robust width of the standardised residuals, the 68.27% quantile of
|z_true - mean| / sigma (insensitive to catastrophic outliers, unlike the RMS), and
then fits a, b, c on the rescaled PITs; Beta calibration then corrects what a width
cannot: bias (c, a != b), asymmetry and tails. ``prescale=False`` gives the pure
three-parameter Beta calibration (s = 1).

Why the central interval is matched last (``match_central=True``, the default with the
pre-scale): the log-loss spreads the Beta map's three parameters over the whole PIT
distribution, and with many catastrophic outliers (heavy tails) its compromise leaves the
central 68% interval off its level even on the fit set (the shipped reference set's
validation set: 0.70 after the fit). With a, b, c fixed every calibrated quantile is
proportional to s, so the s that makes the central 68.27% interval cover exactly that
(weighted) fraction of the fit set has a closed form: the weighted 68.27% quantile of
each object's smallest s that includes it. The 68% interval, the one a redshift user
reads as ZERR, is then right by construction; the 95% interval keeps whatever the Beta
shape gives (reported beside it).

Weights (``weights=`` of both fits). The validation set is drawn from the training
population (flat in z) while the survey follows the CSST-like n(z); both populations
are the same at fixed z, so weighting each validation object by n_survey(z) / n_train(z)
makes the fit target the survey's PIT distribution (importance weighting for a shift
in z alone). The weighted fit uses the weighted 68.27% quantile for the pre-scale and
the weighted empirical CDF of the PITs as labels.

``ScaleCalibration`` is the single-scale-factor variant of the authors' public
code (sigma' = scale * sigma, github.com/xczhou1995/CSST_slitless_spectra,
train_sls/calibration.py, which bisects the scale until the area between the
central-interval reliability curve and the diagonal vanishes). Here ``fit_scale``
uses the closed-form Gaussian maximum-likelihood scale by default
(scale^2 = mean(((z - mean) / sigma)^2)) and optionally the scale that makes the
central 68% coverage exact. A scale cannot move the median, so it cannot correct
a biased mean; Beta calibration (through c and a != b) can.

``reliability_curve`` follows the authors' reliability diagram (paper Fig. 10):
expected confidence level of the central interval against the observed fraction
of truths inside it.

``TemperatureCalibration`` / ``fit_temperature`` calibrate the other distribution the stage
writes, the binned p(z) of a ``zbins`` network (docs/pz.md): softmax(logits / T),
T fitted on the validation set by the log-score of the true bin (notes at the end of this
module). ``cdf`` of the two Gaussian calibrations gives the p(z) of a ``logcosh`` set.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy.optimize import brentq, minimize
from scipy.special import expit, log_expit, log_ndtr, logit, ndtr, ndtri

log = logging.getLogger(__name__)


def _ignored_level(ok) -> int:
    """Objects without survey weight (outside the test n(z)) are expected: a warning only when
    more than a tenth of the fit set is left out."""
    return logging.WARNING if (~ok).mean() > 0.1 else logging.INFO

F_CLIP = 1e-12              # PIT clipping used for fitting (keeps ln F, ln(1-F) finite)
AB_MIN = 1e-3               # lower bound on a, b: keeps G strictly increasing
MAX_THRESHOLDS = 20000      # larger validation sets use evenly spaced ranks as thresholds
MIN_FIT_OBJECTS = 10

Q_MEDIAN = 0.5
Q_68 = (0.15865, 0.84135)
Q_95 = (0.025, 0.975)
LEVEL_68 = 0.6826894921370859   # erf(1/sqrt(2)): probability within +-1 sigma


def _probit_of_logit(u):
    """Phi^-1(expit(u)) without losing precision when expit(u) is close to 1."""
    u = np.asarray(u, dtype=float)
    # For u > 0 use the symmetry Phi^-1(p) = -Phi^-1(1 - p) and 1 - expit(u) = expit(-u).
    return np.where(u > 0, -ndtri(expit(-np.abs(u))), ndtri(expit(-np.abs(u))))


def _gaussian_quantiles(mean, sigma, k):
    """mean + sigma * k with k (the standard-normal quantiles) on a trailing axis if k is 1-D."""
    mean = np.asarray(mean, dtype=float)
    sigma = np.asarray(sigma, dtype=float)
    k = np.asarray(k, dtype=float)
    if k.ndim == 0:
        return mean + sigma * k
    return mean[..., None] + sigma[..., None] * k


@dataclass(frozen=True)
class BetaCalibration:
    """Beta-calibration map of the PIT, optionally after a width pre-scale.

    G(F) = B(Phi(Phi^-1(F) / scale)) with logit B(p) = c + a ln p - b ln(1 - p), a, b > 0,
    scale > 0. With scale = 1 (the default) G is exactly Kull et al.'s map; ``fit_beta``
    sets scale to the robust width of the standardised residuals first (module doc).
    """

    a: float
    b: float
    c: float
    scale: float = 1.0

    IDENTITY: ClassVar["BetaCalibration"]

    def __post_init__(self):
        for name in ("a", "b", "c", "scale"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if not all(np.isfinite([self.a, self.b, self.c, self.scale])):
            raise ValueError(f"Beta calibration parameters must be finite, got {self}")
        if self.a <= 0 or self.b <= 0 or self.scale <= 0:
            raise ValueError(f"Beta calibration needs a, b, scale > 0 for a monotone map, got {self}")

    @classmethod
    def identity(cls) -> "BetaCalibration":
        return cls(1.0, 1.0, 0.0, 1.0)

    def _logit_map_x(self, x):
        """logit G as a function of the standardised residual x = Phi^-1(F).

        log_ndtr keeps ln p and ln(1 - p) accurate deep in both tails; x = -inf / +inf
        give logit G = -inf / +inf, so G(0) = 0 and G(1) = 1 exactly.
        """
        xs = np.asarray(x, dtype=float) / self.scale
        with np.errstate(invalid="ignore"):
            return self.c + self.a * log_ndtr(xs) - self.b * log_ndtr(-xs)

    def cdf_map(self, F):
        """G(F), vectorised; F outside [0, 1] is clipped, NaN stays NaN."""
        F = np.clip(np.asarray(F, dtype=float), 0.0, 1.0)
        return expit(self._logit_map_x(ndtri(F)))

    def _inverse_logit(self, q):
        """u = logit B^-1(q) (Beta part only) per q, same shape as q; q = 0 / 1 give -inf / +inf."""
        q = np.asarray(q, dtype=float)
        out = np.empty(q.shape)
        a, b, c = self.a, self.b, self.c
        for idx, qq in np.ndenumerate(q):
            if not (0.0 <= qq <= 1.0):
                out[idx] = np.nan
                continue
            if qq == 0.0 or qq == 1.0:
                out[idx] = -np.inf if qq == 0.0 else np.inf
                continue
            t = logit(qq)
            if a == b:  # symmetric map: logit B = c + a logit p, closed form
                out[idx] = (t - c) / a
                continue

            # h(u) = logit B(expit(u)) - t is strictly increasing (h' = a expit(-u) + b expit(u) > 0).
            def h(u):
                return c + a * log_expit(u) - b * log_expit(-u) - t

            # 0 <= softplus(x) - max(0, x) <= ln 2 gives a guaranteed bracket.
            lo = min(-1.0, (t - c - b * np.log(2.0)) / a - 1.0)
            hi = max(1.0, (t - c + a * np.log(2.0)) / b + 1.0)
            out[idx] = brentq(h, lo, hi, xtol=1e-12, rtol=1e-14)
        return out

    def _inverse_x(self, q):
        """Phi^-1(G^-1(q)): the calibrated quantile in units of the raw sigma."""
        return self.scale * _probit_of_logit(self._inverse_logit(q))

    def inverse(self, q):
        """G^-1(q), vectorised over q (same shape as q)."""
        return ndtr(self._inverse_x(q))

    def quantiles(self, mean, sigma, q):
        """Calibrated quantiles z_q = mean + sigma * Phi^-1(G^-1(q)).

        Scalar q gives an array of shape broadcast(mean, sigma); 1-D q gives shape
        broadcast(mean, sigma) + (len(q),). q = 0 / 1 give -inf / +inf.
        """
        return _gaussian_quantiles(mean, sigma, self._inverse_x(q))

    def cdf(self, mean, sigma, z):
        """The calibrated CDF of z, G(Phi((z - mean) / sigma)), from the standardised residual so the
        tails keep their precision; broadcasts like numpy (the p(z) of a logcosh set, ``pz.py``)."""
        mean, sigma, z = (np.asarray(v, dtype=float) for v in (mean, sigma, z))
        with np.errstate(divide="ignore", invalid="ignore"):
            return expit(self._logit_map_x((z - mean) / sigma))

    def to_dict(self) -> dict:
        return {"kind": "beta", "a": float(self.a), "b": float(self.b), "c": float(self.c),
                "scale": float(self.scale)}

    @classmethod
    def from_dict(cls, d: dict) -> "BetaCalibration":
        if d.get("kind", "beta") != "beta":
            raise ValueError(f"not a Beta calibration: kind={d.get('kind')!r}")
        return cls(float(d["a"]), float(d["b"]), float(d["c"]), float(d.get("scale", 1.0)))


BetaCalibration.IDENTITY = BetaCalibration.identity()


@dataclass(frozen=True)
class ScaleCalibration:
    """Single scale factor on the predictive sigma: sigma' = scale * sigma."""

    scale: float

    IDENTITY: ClassVar["ScaleCalibration"]

    def __post_init__(self):
        object.__setattr__(self, "scale", float(self.scale))
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be finite and > 0, got {self.scale}")

    @classmethod
    def identity(cls) -> "ScaleCalibration":
        return cls(1.0)

    def quantiles(self, mean, sigma, q):
        """mean + scale * sigma * Phi^-1(q); shapes as in ``BetaCalibration.quantiles``."""
        return _gaussian_quantiles(mean, self.scale * np.asarray(sigma, dtype=float),
                                   ndtri(np.asarray(q, dtype=float)))

    def cdf(self, mean, sigma, z):
        """The calibrated CDF of z, Phi((z - mean) / (scale * sigma)); broadcasts like numpy."""
        mean, sigma, z = (np.asarray(v, dtype=float) for v in (mean, sigma, z))
        with np.errstate(divide="ignore", invalid="ignore"):
            return ndtr((z - mean) / (self.scale * sigma))

    def to_dict(self) -> dict:
        return {"kind": "scale", "scale": float(self.scale)}

    @classmethod
    def from_dict(cls, d: dict) -> "ScaleCalibration":
        if d.get("kind", "scale") != "scale":
            raise ValueError(f"not a scale calibration: kind={d.get('kind')!r}")
        return cls(float(d["scale"]))


ScaleCalibration.IDENTITY = ScaleCalibration.identity()


def calibration_from_dict(d: dict):
    """Rebuild either calibration from its ``to_dict()`` output (dispatch on 'kind')."""
    kind = d.get("kind")
    if kind == "beta":
        return BetaCalibration.from_dict(d)
    if kind == "scale":
        return ScaleCalibration.from_dict(d)
    if kind == "temperature":
        return TemperatureCalibration.from_dict(d)
    raise ValueError(f"unknown calibration kind {kind!r}")


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


def calibrated_summary(calib, mean, sigma) -> dict:
    """Calibrated point estimate and intervals for each object (either calibration class).

    Returns float arrays of shape broadcast(mean, sigma): 'Z' (median, q=0.5), 'Z_LO'/'Z_HI'
    (q=0.15865/0.84135), 'ZERR' = (Z_HI - Z_LO) / 2, 'Z_LO95'/'Z_HI95' (q=0.025/0.975).
    """
    qs = np.array([Q_MEDIAN, Q_68[0], Q_68[1], Q_95[0], Q_95[1]])
    zq = calib.quantiles(mean, sigma, qs)     # one G^-1 per q, shared by all objects
    out = {"Z": zq[..., 0], "Z_LO": zq[..., 1], "Z_HI": zq[..., 2],
           "Z_LO95": zq[..., 3], "Z_HI95": zq[..., 4]}
    out["ZERR"] = 0.5 * (out["Z_HI"] - out["Z_LO"])
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}


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


# ----------------------------------------------------------------------------- p(z): temperature
# The calibration of the binned p(z) (docs/pz.md). A network trained with the ``zbins``
# objective gives a softmax over its redshift bins; its width is whatever the cross-entropy
# against labels smoothed one bin wide made it, which is not a calibrated probability.
# Temperature scaling (Guo et al. 2017, "On calibration of modern neural networks", ICML)
# divides the logits by one number T > 0 fitted on the validation set:
#
#     p_T(i) = exp(l_i / T) / sum_j exp(l_j / T)  =  p(i)^(1/T) / sum_j p(j)^(1/T).
#
# For every object the map p(i) -> p_T(i) is strictly increasing in p(i) (the order of the bins
# by probability, hence every mode, is kept) and T > 1 widens p(z), T < 1 narrows it; T = 1 is
# the identity. T is fitted by the (weighted) mean negative log-likelihood of the bin holding
# the true redshift, a proper scoring rule: the T that minimises it makes the probabilities
# honest on average over the validation set. One parameter cannot fix a biased or mis-shaped
# p(z); it fixes the width, which is the common failure (docs/pz.md says what else was weighed).

TEMPERATURE_BOUNDS = (0.05, 20.0)    # the fit searches ln T between the logs of these


def _log_softmax(logits, temperature: float = 1.0):
    """log p_T, rows of ``logits`` (float64); a row with a non-finite logit gives NaN."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    with np.errstate(invalid="ignore"):
        z = z - np.max(z, axis=-1, keepdims=True)
        return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


@dataclass(frozen=True)
class TemperatureCalibration:
    """p(z) = softmax(logits / temperature) over the network's bins (module notes above)."""

    temperature: float
    # Optional, after the temperature: the CDF of each p(z) mapped through g, with g(x_k) = k/K
    # (piecewise linear, g(0) = 0, g(1) = 1), x_k the quantiles of the validation PITs (module
    # notes below, "PIT map"). None: the temperature alone.
    pit_knots: tuple | None = None

    IDENTITY: ClassVar["TemperatureCalibration"]

    def __post_init__(self):
        object.__setattr__(self, "temperature", float(self.temperature))
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be finite and > 0, got {self.temperature}")
        if self.pit_knots is not None:
            x = np.asarray(self.pit_knots, dtype=np.float64)
            if (x.ndim != 1 or x.size < 3 or not np.all(np.isfinite(x)) or x[0] != 0.0 or x[-1] != 1.0
                    or np.any(np.diff(x) <= 0)):
                raise ValueError("PIT knots must rise strictly from 0 to 1 (at least 3 of them)")
            object.__setattr__(self, "pit_knots", tuple(float(v) for v in x))

    @property
    def method(self) -> str:
        return "temperature" if self.pit_knots is None else "temperature+pit"

    @classmethod
    def identity(cls) -> "TemperatureCalibration":
        return cls(1.0)

    def probabilities(self, logits) -> np.ndarray:
        """(N, B) float64 rows that sum to 1: softmax(logits / T); NaN rows where a logit is not finite."""
        with np.errstate(invalid="ignore", over="ignore"):
            p = np.exp(_log_softmax(logits, self.temperature))
        bad = ~np.all(np.isfinite(np.asarray(logits, dtype=np.float64)), axis=-1)
        p[bad] = np.nan
        return p if self.pit_knots is None else apply_pit_map(p, self.pit_knots)

    def map_probabilities(self, p) -> np.ndarray:
        """The same map applied to probabilities instead of logits: p^(1/T), renormalised per row."""
        return self.probabilities(_log_or_floor(np.asarray(p, dtype=np.float64)))

    def to_dict(self) -> dict:
        d = {"kind": "temperature", "temperature": float(self.temperature)}
        if self.pit_knots is not None:
            d["pit_knots"] = list(self.pit_knots)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TemperatureCalibration":
        if d.get("kind", "temperature") != "temperature":
            raise ValueError(f"not a temperature calibration: kind={d.get('kind')!r}")
        return cls(float(d["temperature"]), d.get("pit_knots"))


TemperatureCalibration.IDENTITY = TemperatureCalibration.identity()


# ----------------------------------------------------------------------------- p(z): PIT map
# Temperature scaling fixes one width; the PIT of the 0005 network's p(z) stayed off uniform
# after it (KS 0.09 on the nominal test set: too many truths in the middle of the CDF, too few
# in the tails). The PIT map is the classic recalibration of a predictive CDF (Kuleshov et al.
# 2018, "Accurate uncertainties for deep learning using calibrated regression", ICML): with F
# the p(z) CDF and g the CDF of the validation PITs, g(F) has uniform PITs on the validation set.
# g is stored as the PIT quantiles x_k at the levels k/K and applied piecewise linearly to the
# CDF at the bin edges; it is strictly increasing with g(0) = 0 and g(1) = 1, so every row stays
# non-negative and sums to 1; where g is steep near 0 and 1 (PITs piled in the tails) it widens
# p(z), where it is flat it narrows it.

PIT_MAP_LEVELS = 40          # K: knots at the PIT quantiles 0, 1/K, ..., 1


def apply_pit_map(p, knots) -> np.ndarray:
    """Rows ``p`` (N, B) summing to 1 -> the rows whose CDF at the bin edges is g(CDF) (above);
    NaN rows stay NaN."""
    p = np.asarray(p, dtype=np.float64)
    x = np.asarray(knots, dtype=np.float64)
    u = np.linspace(0.0, 1.0, x.size)
    cdf = np.concatenate([np.zeros(p.shape[:-1] + (1,)), np.cumsum(p, axis=-1)], axis=-1)
    cdf = np.clip(cdf / cdf[..., -1:], 0.0, 1.0) if p.size else cdf
    mapped = np.interp(cdf.ravel(), x, u).reshape(cdf.shape)
    out = np.diff(mapped, axis=-1)
    out[~np.all(np.isfinite(p), axis=-1)] = np.nan
    return out


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


def _log_or_floor(p):
    """ln p with zeros at the smallest float64 log, so a zero stays (numerically) zero after the map."""
    tiny = np.finfo(np.float64).tiny
    return np.log(np.maximum(p, tiny))


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
