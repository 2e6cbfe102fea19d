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

What the stage applies lives here: ``BetaCalibration`` and ``ScaleCalibration`` (the Gaussian
calibrations, their quantiles and CDF), ``TemperatureCalibration`` with its PIT map (the
binned p(z)), ``calibration_from_dict`` and ``calibrated_summary``. The fits that make them
from a validation set are in ``training/calibration_fit.py``; why each method and fit was
chosen is in docs/pz.md ("How the calibrations are fitted").
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit, log_expit, log_ndtr, logit, ndtr, ndtri

log = logging.getLogger(__name__)


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

def _log_softmax(logits, temperature: float = 1.0):
    """log p_T, rows of ``logits`` (float64); a row with a non-finite logit gives NaN."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    with np.errstate(invalid="ignore"):
        z = z - np.max(z, axis=-1, keepdims=True)
        return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))

@dataclass(frozen=True)
class TemperatureCalibration:
    """p(z) = softmax(logits / temperature) over the network's bins (docs/pz.md, "How the calibrations are fitted")."""

    temperature: float
    # Optional, after the temperature: the CDF of each p(z) mapped through g, with g(x_k) = k/K
    # (piecewise linear, g(0) = 0, g(1) = 1), x_k the quantiles of the validation PITs (docs/pz.md,
    # "The binned p(z): PIT map"). None: the temperature alone.
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

def _log_or_floor(p):
    """ln p with zeros at the smallest float64 log, so a zero stays (numerically) zero after the map."""
    tiny = np.finfo(np.float64).tiny
    return np.log(np.maximum(p, tiny))
