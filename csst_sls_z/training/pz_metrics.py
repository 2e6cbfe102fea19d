"""Metrics of p(z) and of the clean sample (docs/pz.md, docs/validation.md).

Every function takes p(z) rows on a ``pz.PzGrid`` (probability per bin, rows summing to 1) and
the true redshifts; rows that are NaN (objects not measured) and truths off the grid are left
out, and the count used is returned beside each value.

* PIT: the CDF of p(z) at the truth, linear inside the truth's bin (in the grid variable);
  its histogram and the Kolmogorov-Smirnov distance of its distribution from uniform. A
  calibrated p(z) gives a flat histogram and a small distance.
* CRPS: the integral over z of (CDF(z) - 1[z >= z_true])^2, with the CDF linear inside each
  bin in z, integrated exactly over the grid (the truth's step inside its bin included).
* HPD coverage: the fraction of truths inside the highest-density region of each level (the
  fewest bins, highest probability first, holding at least that probability).
* n(z): the stacked p(z) (the mean of the rows) against the histogram of the truths on the same
  bins, and the integrated absolute difference sum_i |stack_i - hist_i| (0: identical, 2:
  disjoint).
* MULTIPLE_PEAKS: among the catastrophic outliers (|dz|/(1+z) > 0.02 of Z), the fraction it
  flags, and among the others the fraction it flags; also how often Z_ALT is the right answer
  for a flagged outlier.
* clean sample: the kept fraction against eta among the kept when objects are dropped in the
  order of a score (worst first), read at ``KEPT_FRACTIONS``.
"""
from __future__ import annotations

import numpy as np

from .metrics import OUTLIER_THRESHOLD

PIT_BINS = 20
HPD_LEVELS = (0.68, 0.95)
KEPT_FRACTIONS = (0.5, 0.6, 0.7)


def _usable(pz, grid, z_true):
    pz = np.asarray(pz, dtype=np.float64)
    z_true = np.asarray(z_true, dtype=np.float64).ravel()
    b = grid.bin_index(z_true)
    ok = (b >= 0) & np.all(np.isfinite(pz), axis=1)
    return pz[ok], z_true[ok], b[ok], ok


def usable_rows(pz, grid, z_true) -> np.ndarray:
    """The mask of the rows every metric here uses (a finite p(z), the truth on the grid)."""
    return _usable(pz, grid, z_true)[3]


def pit_values(pz, grid, z_true) -> np.ndarray:
    """PIT of each usable object (module doc), in the order of the usable rows."""
    pz, z_true, b, _ = _usable(pz, grid, z_true)
    if not len(b):
        return np.zeros(0)
    cum = np.cumsum(pz, axis=1) - pz            # probability below each bin
    rows = np.arange(b.size)
    x = grid._from_z(z_true)
    frac = np.clip((x - (grid.z0 + (b - 0.5) * grid.dz)) / grid.dz, 0.0, 1.0)
    return np.clip(cum[rows, b] + frac * pz[rows, b], 0.0, 1.0)


def pit_summary(pit, n_bins: int = PIT_BINS) -> dict:
    """{"histogram": counts per bin of [0, 1], "ks": KS distance from uniform, "n"}."""
    pit = np.sort(np.asarray(pit, dtype=float))
    n = pit.size
    if n == 0:
        return {"histogram": [0] * n_bins, "ks": float("nan"), "n": 0}
    counts, _ = np.histogram(pit, bins=n_bins, range=(0.0, 1.0))
    i = np.arange(1, n + 1)
    ks = float(max(np.max(i / n - pit), np.max(pit - (i - 1) / n)))
    return {"histogram": [int(c) for c in counts], "ks": ks, "n": int(n)}


def crps(pz, grid, z_true) -> np.ndarray:
    """CRPS of each usable object (module doc), in z."""
    pz, z_true, b, _ = _usable(pz, grid, z_true)
    if not len(b):
        return np.zeros(0)
    edges = grid.edges()
    width = np.diff(edges)[None, :]
    f0 = np.cumsum(pz, axis=1) - pz             # CDF at each bin's lower edge
    # CDF linear inside bin j: F(t) = f0 + p t, t in [0, 1]: int_0^1 F^2 = f0^2 + f0 p + p^2 / 3,
    # int_0^1 (1 - F)^2 the same with g0 = 1 - f0 going down by p.
    below = (f0 * f0 + f0 * pz + pz * pz / 3.0) * width
    g0 = 1.0 - f0
    above = (g0 * g0 - g0 * pz + pz * pz / 3.0) * width
    j = np.arange(grid.nbin)[None, :]
    total = np.where(j < b[:, None], below, 0.0).sum(axis=1) + np.where(j > b[:, None], above, 0.0).sum(axis=1)
    # The truth's own bin: below the truth (F^2), above it ((1 - F)^2), t* its place in the bin.
    rows = np.arange(b.size)
    lo, w = edges[b], np.diff(edges)[b]
    t_star = np.clip((z_true - lo) / w, 0.0, 1.0)
    f, p = f0[rows, b], pz[rows, b]

    def int_f2(t):          # int_0^t (f + p s)^2 ds
        return f * f * t + f * p * t * t + p * p * t ** 3 / 3.0

    def int_g2(t):          # int_0^t (1 - f - p s)^2 ds
        g = 1.0 - f
        return g * g * t - g * p * t * t + p * p * t ** 3 / 3.0
    total += (int_f2(t_star) + int_g2(1.0) - int_g2(t_star)) * w
    return total


def hpd_coverage(pz, grid, z_true, levels=HPD_LEVELS) -> dict:
    """{level: fraction of usable truths inside the level's highest-density region}."""
    pz, _, b, _ = _usable(pz, grid, z_true)
    if not len(b):
        return {f"{lv:g}": float("nan") for lv in levels}
    order = np.argsort(-pz, axis=1, kind="stable")
    sorted_p = np.take_along_axis(pz, order, axis=1)
    cum = np.cumsum(sorted_p, axis=1)
    rows = np.arange(b.size)
    rank = np.empty_like(order)                  # each bin's place, highest probability first
    np.put_along_axis(rank, order, np.arange(grid.nbin)[None, :].repeat(b.size, axis=0), axis=1)
    rank_truth = rank[rows, b]
    out = {}
    for lv in levels:
        k = np.minimum(np.argmax(cum >= lv - 1e-12, axis=1), grid.nbin - 1)   # last bin in the region
        # The last bin takes the region past the level; it counts for the part of it the level
        # needs, so the coverage is not biased up by a bin's width.
        last = sorted_p[rows, k]
        part = np.clip((lv - (cum[rows, k] - last)) / np.where(last > 0, last, 1.0), 0.0, 1.0)
        covered = np.where(rank_truth < k, 1.0, np.where(rank_truth == k, part, 0.0))
        out[f"{lv:g}"] = float(np.mean(covered))
    return out


def stacked_nz(pz, grid, z_true) -> dict:
    """{"stacked", "true", "abs_diff", "n"}: the mean p(z) and the truths' histogram on the grid."""
    pz = np.asarray(pz, dtype=np.float64)
    z_true = np.asarray(z_true, dtype=np.float64).ravel()
    ok = np.all(np.isfinite(pz), axis=1)
    b = grid.bin_index(z_true[ok])
    stacked = pz[ok].mean(axis=0) if ok.any() else np.full(grid.nbin, np.nan)
    hist = np.bincount(b[b >= 0], minlength=grid.nbin).astype(float)
    hist /= max(hist.sum(), 1.0)
    return {"stacked": stacked, "true": hist, "abs_diff": float(np.sum(np.abs(stacked - hist))),
            "n": int(ok.sum())}


def outliers(z, z_true) -> np.ndarray:
    """Catastrophic outliers of a point estimate (non-finite Z counts as one)."""
    z, z_true = np.asarray(z, dtype=float), np.asarray(z_true, dtype=float)
    with np.errstate(invalid="ignore"):
        return ~(np.abs(z - z_true) / (1.0 + z_true) <= OUTLIER_THRESHOLD)


def flag_metrics(flagged, z, z_true, z_alt=None) -> dict:
    """Completeness of a flag among the outliers of Z and the fraction of good objects it flags."""
    flagged = np.asarray(flagged, dtype=bool)
    out = outliers(z, z_true)
    res = {"n_outliers": int(out.sum()), "n_good": int((~out).sum()),
           "completeness_outliers": float(flagged[out].mean()) if out.any() else float("nan"),
           "flagged_good": float(flagged[~out].mean()) if (~out).any() else float("nan")}
    if z_alt is not None:
        sel = flagged & out
        alt_right = ~outliers(np.asarray(z_alt, dtype=float)[sel], np.asarray(z_true, dtype=float)[sel])
        res["z_alt_right_among_flagged_outliers"] = float(alt_right.mean()) if sel.any() else float("nan")
    return res


def kept_eta_curve(score, z, z_true, n_points: int = 51) -> dict:
    """Kept fraction against eta among the kept, dropping the highest ``score`` first (NaN scores
    are dropped first): {"kept": [...], "eta": [...], "at": {kept fraction: eta}}."""
    score = np.asarray(score, dtype=float)
    bad = outliers(z, z_true)
    order = np.argsort(np.where(np.isfinite(score), score, np.inf), kind="stable")
    cum_bad = np.cumsum(bad[order])
    n = score.size
    kept = np.linspace(0.0, 1.0, n_points)[1:]
    k = np.maximum(np.round(kept * n).astype(int), 1)
    eta = cum_bad[k - 1] / k
    at = {f"{f:g}": float(cum_bad[max(int(round(f * n)), 1) - 1] / max(int(round(f * n)), 1))
          for f in KEPT_FRACTIONS}
    return {"kept": [float(v) for v in kept], "eta": [float(v) for v in eta], "at": at}


def pz_metrics(pz, grid, z_true) -> dict:
    """PIT (histogram, KS), mean CRPS, HPD coverage and n(z) of one set, as JSON-ready numbers."""
    pit = pit_values(pz, grid, z_true)
    nz = stacked_nz(pz, grid, z_true)
    c = crps(pz, grid, z_true)
    return {"pit": pit_summary(pit), "crps_mean": float(np.mean(c)) if c.size else float("nan"),
            "crps_median": float(np.median(c)) if c.size else float("nan"),
            "hpd_coverage": hpd_coverage(pz, grid, z_true),
            "nz_abs_diff": nz["abs_diff"], "n": int(pit.size)}


def peak_recall(pz, grid, z_anchor, z_true, model) -> np.ndarray:
    """Per object: whether the true redshift lies within ``model.window_half`` in ln(1 + z) of
    ``z_anchor`` (the network's Z) or of one of the p(z) peaks that get a refinement window
    (``refine.find_peaks``). Where it does not, no fit inside the windows can find the truth:
    the outlier is the network's (its peak list missed the redshift). Rows without a finite p(z)
    count as missed."""
    from ..refine import find_peaks
    centres = np.log1p(grid.centres())
    s_true = np.log1p(np.asarray(z_true, dtype=float))
    anchor = np.log1p(np.asarray(z_anchor, dtype=float))
    held = np.zeros(s_true.size, bool)
    for i, row in enumerate(np.asarray(pz, dtype=float)):
        if not np.all(np.isfinite(row)):
            continue
        anchors = np.concatenate([[anchor[i]], centres[find_peaks(row, model)]])
        held[i] = bool(np.any(np.abs(anchors - s_true[i]) <= model.window_half))
    return held
