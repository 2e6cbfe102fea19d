"""Calibrating the refinement's posterior: the temperature T of its likelihood.

The refined posterior (``csst_sls_z.refine``) redistributes the network's probability inside each
window by exp(-(objective - min) / (2 T)). T = 1 trusts the chi-square as it is; template mismatch
makes it too narrow, so T is fitted on a validation set: the T at which the central 68% intervals
cover 68% of the true redshifts. :func:`fit_temperature` does it by bisection in ln T, each step
recomputing the intervals from the stored posterior (no rescan); write the result into the
refinement reference file (``RefinementModel.replace(temperature=T)``, ``write_refinement``).

Template mismatch matters more where the spectrum is clean: one T over-covers at high SNR and
under-covers at low SNR, and a test set whose SNR mix differs from the validation set's then misses
68% overall. :func:`fit_temperatures_by_snr` fits one T per GI SNR bin (``TEMPERATURE_SNR_EDGES``;
a bin with fewer than ``MIN_OBJECTS_PER_BIN`` refined objects is fitted together with its nearest
bins until it has that many), which the stage
applies by each object's SNR_GI (``RefinementModel.temperature_for``).
"""
from __future__ import annotations

import logging
import math

import numpy as np

from ..refine import STATUS_NOT_RUN, intervals

log = logging.getLogger(__name__)

T_RANGE = (1e-2, 1e4)
# GI SNR edges of the temperature bins (the evaluation's SNR bins above 1.5), and the refined
# validation objects a bin needs for its own temperature.
TEMPERATURE_SNR_EDGES = (1.5, 3.0, 5.0)
MIN_OBJECTS_PER_BIN = 300


def coverage(posterior, z_true, temperature: float, level: float = 0.68, rows=None) -> float:
    """Fraction of ``z_true`` inside the central ``level`` interval at ``temperature`` (over ``rows``)."""
    post = getattr(posterior, "posterior", posterior)
    if rows is not None:
        post = post.subset(rows)
        z_true = np.asarray(z_true, dtype=float)[rows]
    iv = intervals(post, temperature, levels=(level,))
    z_true = np.asarray(z_true, dtype=float)
    ok = np.isfinite(iv["Z_LO"]) & np.isfinite(iv["Z_HI"])
    if not ok.any():
        return float("nan")
    inside = (iv["Z_LO"][ok] <= z_true[ok]) & (z_true[ok] <= iv["Z_HI"][ok])
    return float(np.mean(inside))


def fit_temperature(posterior, z_true, target: float = 0.68, t_range=T_RANGE, tol: float = 1e-3,
                    max_iter: int = 60) -> float:
    """The temperature at which the central ``target`` intervals cover ``target`` of ``z_true``.

    ``posterior``: a ``Refinement`` (objects the refinement did not run on are left out: T does not
    change their intervals) or a ``Posterior`` (every object used). Coverage grows with T; bisection in
    ln T within ``t_range`` until the bracket is narrower than ``tol`` in ln T. When even the ends miss
    the target the nearer end is returned (logged).
    """
    z_true = np.asarray(z_true, dtype=float).ravel()
    if not np.all(np.isfinite(z_true)):
        raise ValueError("z_true contains non-finite values")
    rows = None
    status = getattr(posterior, "status", None)
    post = getattr(posterior, "posterior", posterior)
    if len(post) != z_true.size:
        raise ValueError(f"{len(post)} posteriors but {z_true.size} true redshifts")
    if status is not None:
        rows = np.nonzero(np.asarray(status) != STATUS_NOT_RUN)[0]
        if rows.size == 0:
            raise ValueError("the refinement ran on no object: nothing to calibrate")
    lo, hi = math.log(t_range[0]), math.log(t_range[1])
    c_lo = coverage(post, z_true, math.exp(lo), target, rows)
    c_hi = coverage(post, z_true, math.exp(hi), target, rows)
    if not c_lo < target:
        log.warning("refinement temperature: coverage %.3f >= %.3f already at T = %g", c_lo, target, t_range[0])
        return float(t_range[0])
    if not c_hi > target:
        log.warning("refinement temperature: coverage %.3f <= %.3f even at T = %g", c_hi, target, t_range[1])
        return float(t_range[1])
    for _ in range(max_iter):
        if hi - lo < tol:
            break
        mid = 0.5 * (lo + hi)
        if coverage(post, z_true, math.exp(mid), target, rows) < target:
            lo = mid
        else:
            hi = mid
    t = math.exp(0.5 * (lo + hi))
    log.info("refinement temperature %.4g: 68%% coverage %.3f", t, coverage(post, z_true, t, target, rows))
    return float(t)


def fit_temperatures_by_snr(refinement, z_true, snr_gi, edges=TEMPERATURE_SNR_EDGES,
                            min_objects: int = MIN_OBJECTS_PER_BIN) -> dict:
    """{"temperature": the overall T, "edges": ``edges``, "temperatures": one T per GI SNR bin,
    "n": refined objects per bin}: :func:`fit_temperature` on all objects, then on each bin of
    ``snr_gi``. A bin with fewer than ``min_objects`` refined objects is fitted on the union with its
    neighbours, nearest first and the lower one before the higher, until the union has that many: the
    overall T is dominated by the many faint objects and would misstate a thin bright bin."""
    z_true = np.asarray(z_true, dtype=float).ravel()
    snr = np.asarray(snr_gi, dtype=float).ravel()
    if snr.size != z_true.size:
        raise ValueError(f"{snr.size} SNR values but {z_true.size} true redshifts")
    overall = fit_temperature(refinement, z_true)
    ran = np.asarray(refinement.status) != STATUS_NOT_RUN
    bins = np.searchsorted(np.asarray(edges, dtype=float), snr, side="right")
    usable = ran & np.isfinite(snr)
    n_bins = len(edges) + 1
    counts = [int(np.count_nonzero(usable & (bins == b))) for b in range(n_bins)]
    temps = []
    for b in range(n_bins):
        lo = hi = b
        while sum(counts[lo:hi + 1]) < min_objects and (lo > 0 or hi < n_bins - 1):
            # widen towards the nearer neighbour; the lower one first at equal distance
            if lo > 0 and (b - lo <= hi - b or hi == n_bins - 1):
                lo -= 1
            else:
                hi += 1
        rows = np.nonzero(usable & (bins >= lo) & (bins <= hi))[0]
        if (lo, hi) != (b, b):
            log.info("refinement temperature, GI SNR bin %d: %d objects, fitted with bins %d-%d (%d)",
                     b, counts[b], lo, hi, rows.size)
        if rows.size == 0:
            temps.append(overall)
            continue
        temps.append(fit_temperature(refinement.subset(rows), z_true[rows]))
    return {"temperature": overall, "edges": tuple(float(e) for e in edges), "temperatures": tuple(temps),
            "n": counts}
