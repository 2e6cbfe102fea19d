"""How the calibrate step chooses the ZWARN thresholds, with every number named.

On the validation set (calibrated Z and ZERR, the true z, SNR_GI, P_ALT and backbone
features; each object weighted to the CSST-like n(z) when the calibration is) and a sample
of the training features:

* The clean sample: LOW_SNR, LARGE_ZERR and MULTIPLE_PEAKS are chosen together,
  as the combination whose ZWARN == 0 sample (none of the three set) is best on validation:
  the one keeping the most objects with eta among the kept at most ``CLEAN_ETA``, if that
  keeps at least ``CLEAN_MIN_KEPT``; otherwise, among the combinations keeping at least
  ``CLEAN_MIN_KEPT``, the one with the smallest eta among the kept (ties: the most kept).
  Candidates: LOW_SNR at the SNR_GI percentiles ``CLEAN_LOW_SNR_PERCENTILES`` (0: flags
  none), LARGE_ZERR at the ZERR/(1+Z) percentiles ``CLEAN_LARGE_ZERR_PERCENTILES`` (100: flags
  none), MULTIPLE_PEAKS at the values of ``MULTIPLE_PEAKS_SCAN`` that flag at most
  ``MULTIPLE_PEAKS_MAX_GOOD`` of the good validation objects and catch at least
  ``MULTIPLE_PEAKS_MIN_CATCH`` of the outliers (the flag's own goals, so that it keeps its
  meaning), or, when none does both, those meeting the first; at the rule below when none
  meets even that. Without P_ALT only the first two are chosen. With fewer than
  ``MIN_SELECTED`` outliers or good objects there is nothing to choose on, and the rules
  below, one flag at a time, are used instead:

* LOW_SNR: the largest SNR_GI below which at least ``LOW_SNR_ETA`` of the validation
  objects are outliers, scanning SNR_GI percentiles ``LOW_SNR_SCAN`` (50 down to 1);
  the ``LOW_SNR_FALLBACK`` percentile when none qualifies;
* LARGE_ZERR: the smallest ZERR/(1+Z) above which at least ``LARGE_ZERR_ETA`` of them
  are outliers, scanning percentiles ``LARGE_ZERR_SCAN`` (50 up to 99.5); the
  ``LARGE_ZERR_FALLBACK`` percentile when none qualifies;
* a selection counts only with at least ``MIN_SELECTED`` objects;
* OUT_OF_DISTRIBUTION: the ``OOD_PERCENTILE`` percentile of the validation objects'
  Mahalanobis distance (per dimension) from the training features, whose covariance gets
  ``COVARIANCE_RIDGE`` on its diagonal before it is inverted.
* MULTIPLE_PEAKS: among the P_ALT thresholds that flag at most
  ``MULTIPLE_PEAKS_MAX_GOOD`` of the validation objects that are not outliers, the one with the
  largest completeness among the outliers minus that fraction (Youden's J), scanning the
  P_ALT values ``MULTIPLE_PEAKS_SCAN`` (0.02 to 0.5: a second peak under 2% is no second solution;
  ties: the larger threshold, fewer flags); the largest of them when none flags few enough
  good objects. With fewer than
  ``MIN_SELECTED`` outliers there is nothing to choose on: ``MULTIPLE_PEAKS_FALLBACK``.
  Without P_ALT (a set whose p(z) was not computed) the file gets no MPEAKPAL and the bit
  stays disabled.

The thresholds file's HISTORY says the same, with the values chosen.
"""
from __future__ import annotations


import numpy as np

LOW_SNR_ETA = 0.25
LOW_SNR_SCAN = np.arange(50, 0, -1)           # SNR_GI percentiles, highest first
LOW_SNR_FALLBACK = 5                           # percentile
LARGE_ZERR_ETA = 0.5
LARGE_ZERR_SCAN = np.arange(50, 100, 0.5)      # ZERR/(1+Z) percentiles, lowest first
LARGE_ZERR_FALLBACK = 99                       # percentile
MIN_SELECTED = 20
OOD_PERCENTILE = 99.9
COVARIANCE_RIDGE = 1e-6
MULTIPLE_PEAKS_MAX_GOOD = 0.10                  # at most this fraction of good objects flagged
MULTIPLE_PEAKS_MIN_CATCH = 0.50                 # in the clean-sample choice: catch this much, where possible
MULTIPLE_PEAKS_SCAN = np.round(np.arange(0.02, 0.501, 0.005), 3)   # P_ALT thresholds tried
MULTIPLE_PEAKS_FALLBACK = 0.3
CLEAN_ETA = 0.03                                # the goal for the clean sample ...
CLEAN_MIN_KEPT = 0.60                           # ... keeping at least this fraction
CLEAN_LOW_SNR_PERCENTILES = np.arange(0, 72, 2)
CLEAN_LARGE_ZERR_PERCENTILES = np.arange(30, 101, 1)


def choose_low_snr(z, z_true, snr_gi) -> float:
    from .metrics import outlier_fraction
    for s in np.percentile(snr_gi, LOW_SNR_SCAN):
        sel = snr_gi < s
        if sel.sum() >= MIN_SELECTED and outlier_fraction(z[sel], z_true[sel]) >= LOW_SNR_ETA:
            return float(s)
    return float(np.percentile(snr_gi, LOW_SNR_FALLBACK))


def choose_large_zerr(z, z_true, rel_err) -> float:
    from .metrics import outlier_fraction
    for t in np.percentile(rel_err, LARGE_ZERR_SCAN):
        sel = rel_err > t
        if sel.sum() >= MIN_SELECTED and outlier_fraction(z[sel], z_true[sel]) >= LARGE_ZERR_ETA:
            return float(t)
    return float(np.percentile(rel_err, LARGE_ZERR_FALLBACK))


def choose_thresholds(z, zerr, z_true, snr_gi, val_features, train_features, z_min, z_max, p_alt=None,
                      weights=None):
    """(Thresholds, why): the thresholds and one line of reasoning for each.

    z, zerr: calibrated Z and ZERR of the validation objects; z_true, snr_gi: theirs;
    val_features: their backbone features; train_features: the training feature sample;
    p_alt: their P_ALT (None: MULTIPLE_PEAKS is left disabled); weights: per-object weights
    of the clean-sample choice (None: equal).
    """
    from ..reffiles.tables import Thresholds
    rel_err = zerr / (1 + z)
    clean = choose_clean_sample(z, z_true, snr_gi, rel_err, p_alt, weights)
    if clean is not None:
        low_snr, large, multiple, clean_why = clean
    else:
        low_snr = choose_low_snr(z, z_true, snr_gi)
        large = choose_large_zerr(z, z_true, rel_err)
    feats = np.asarray(train_features, np.float64)
    cov = np.cov(feats, rowvar=False) + COVARIANCE_RIDGE * np.eye(feats.shape[1])
    th = Thresholds(low_snr=low_snr, large_zerr=large, ood_max=0.0, ood_mean=feats.mean(axis=0),
                    ood_precision=np.linalg.inv(cov), z_min=z_min, z_max=z_max)
    ood_max = float(np.percentile(th.ood_distance(np.asarray(val_features, np.float64)), OOD_PERCENTILE))
    th = th.replace(ood_max=ood_max)
    ood_why = (f"OOD {ood_max:.3f}: {OOD_PERCENTILE:g}th percentile of validation feature Mahalanobis distance "
               "(per dim).")
    if clean is not None:
        th = th.replace(multiple_peaks=multiple)
        return th, clean_why + [ood_why]
    why = [f"LOW_SNR {low_snr:.3f}: largest SNR_GI below which >= {LOW_SNR_ETA:.0%} of validation objects "
           "are outliers.",
           f"LARGE_ZERR {large:.5f}: smallest ZERR/(1+Z) above which >= {LARGE_ZERR_ETA:.0%} of validation "
           "objects are outliers.", ood_why]
    if p_alt is not None:
        multiple, reason = choose_multiple_peaks(z, z_true, p_alt)
        th = th.replace(multiple_peaks=multiple)
        why.append(reason)
    return th, why


def _weighted_kept_eta(keep_base, rel_sorted_idx, rel_sorted, outlier, w, thresholds):
    """Kept fraction and eta among the kept of ``keep_base & (rel <= t)`` for each t (arrays)."""
    wk = np.where(keep_base, w, 0.0)[rel_sorted_idx]
    wo = np.where(keep_base & outlier, w, 0.0)[rel_sorted_idx]
    cut = np.searchsorted(rel_sorted, thresholds, side="right")
    ck, co = np.r_[0.0, np.cumsum(wk)], np.r_[0.0, np.cumsum(wo)]
    kept_w, out_w = ck[cut], co[cut]
    with np.errstate(invalid="ignore", divide="ignore"):
        eta = np.where(kept_w > 0, out_w / kept_w, np.inf)
    return kept_w / w.sum(), eta


def choose_clean_sample(z, z_true, snr_gi, rel_err, p_alt=None, weights=None):
    """(LOW_SNR, LARGE_ZERR, MULTIPLE_PEAKS or None, why) chosen together (module doc), or None
    when the validation set has too few outliers or good objects to choose on."""
    from .pz_metrics import outliers
    z, z_true, snr_gi, rel_err = (np.asarray(v, dtype=float) for v in (z, z_true, snr_gi, rel_err))
    w = np.ones(z.size) if weights is None else np.asarray(weights, dtype=float)
    w = np.where(np.isfinite(w) & (w > 0), w, 0.0)
    outlier = outliers(z, z_true)
    n_out, n_good = int((outlier & (w > 0)).sum()), int((~outlier & (w > 0)).sum())
    if n_out < MIN_SELECTED or n_good < MIN_SELECTED:
        return None
    rel = np.where(np.isfinite(rel_err), rel_err, np.inf)
    snr = np.where(np.isfinite(snr_gi), snr_gi, -np.inf)
    low_snr_cands = np.percentile(snr[np.isfinite(snr)], CLEAN_LOW_SNR_PERCENTILES)
    low_snr_cands[0] = -np.inf                     # percentile 0: flag none
    zerr_cands = np.percentile(rel[np.isfinite(rel)], CLEAN_LARGE_ZERR_PERCENTILES)
    zerr_cands[-1] = np.inf                        # percentile 100: flag none
    if p_alt is None:
        mp_cands, mp_note = [None], "no P_ALT: MULTIPLE_PEAKS stays disabled"
        pa = np.zeros(z.size)
    else:
        pa = np.where(np.isfinite(np.asarray(p_alt, float)), np.asarray(p_alt, float), 0.0)
        false = np.array([np.average(pa[~outlier] > t, weights=w[~outlier]) for t in MULTIPLE_PEAKS_SCAN])
        catch = np.array([np.average(pa[outlier] > t, weights=w[outlier]) for t in MULTIPLE_PEAKS_SCAN])
        few = false <= MULTIPLE_PEAKS_MAX_GOOD
        both = few & (catch >= MULTIPLE_PEAKS_MIN_CATCH)
        mp_cands = [float(t) for t in MULTIPLE_PEAKS_SCAN[both if both.any() else few]]
        mp_note = (f"MULTIPLE_PEAKS candidates: the P_ALT values of {MULTIPLE_PEAKS_SCAN[0]:g}-"
                   f"{MULTIPLE_PEAKS_SCAN[-1]:g} flagging at most {MULTIPLE_PEAKS_MAX_GOOD:.0%} of good objects"
                   + (f" and catching at least {MULTIPLE_PEAKS_MIN_CATCH:.0%} of outliers" if both.any() else
                      f" (none also catches {MULTIPLE_PEAKS_MIN_CATCH:.0%} of outliers)"))
        if not mp_cands:
            mp_cands = [choose_multiple_peaks(z, z_true, pa)[0]]
            mp_note = "MULTIPLE_PEAKS: no P_ALT scanned flags few enough good objects; its own rule's value"
    order = np.argsort(rel, kind="stable")
    rel_sorted = rel[order]
    rows = []              # (kept, eta, index of m, index of s, index of t) of every combination
    for im, m in enumerate(mp_cands):
        keep_m = np.ones(z.size, bool) if m is None else ~(pa > m)
        for js, s in enumerate(low_snr_cands):
            kept, eta = _weighted_kept_eta(keep_m & ~(snr < s), order, rel_sorted, outlier, w, zerr_cands)
            rows.append(np.column_stack([kept, eta, np.full(kept.size, im), np.full(kept.size, js),
                                         np.arange(kept.size)]))
    rows = np.concatenate(rows)
    rows = rows[rows[:, 0] >= CLEAN_MIN_KEPT - 1e-12]    # never empty: flagging nothing keeps everything
    meets = bool(np.any(rows[:, 1] <= CLEAN_ETA))
    if meets:
        rows = rows[rows[:, 1] <= CLEAN_ETA]
        pick = np.lexsort((rows[:, 1], -rows[:, 0]))[0]     # the most kept, then the smallest eta
    else:
        pick = np.lexsort((-rows[:, 0], rows[:, 1]))[0]     # the smallest eta, then the most kept
    kept, eta = float(rows[pick, 0]), float(rows[pick, 1])
    m = mp_cands[int(rows[pick, 2])]
    s, t = float(low_snr_cands[int(rows[pick, 3])]), float(zerr_cands[int(rows[pick, 4])])
    rule = (f"the most kept with eta among the kept <= {CLEAN_ETA:.0%}" if meets else
            f"no combination keeping >= {CLEAN_MIN_KEPT:.0%} reaches eta <= {CLEAN_ETA:.0%}; the smallest eta "
            f"among those keeping >= {CLEAN_MIN_KEPT:.0%}")
    weighting = "equal weights" if weights is None else "weighted as the calibration"
    low_snr = s if np.isfinite(s) else 0.0
    large = t if np.isfinite(t) else float(np.max(rel[np.isfinite(rel)]))
    why = [f"LOW_SNR {low_snr:.3f}, LARGE_ZERR {large:.5f}"
           + (f", MULTIPLE_PEAKS {m:.3f}" if m is not None else "")
           + f": chosen together for the clean sample (ZWARN == 0) on {z.size} validation objects ({weighting}): "
           f"{rule}; it keeps {kept:.1%} with eta {eta:.1%} among the kept ({mp_note}; LOW_SNR at SNR_GI "
           f"percentiles {CLEAN_LOW_SNR_PERCENTILES[0]}-{CLEAN_LOW_SNR_PERCENTILES[-1]}, LARGE_ZERR at ZERR/(1+Z) "
           f"percentiles {CLEAN_LARGE_ZERR_PERCENTILES[0]}-{CLEAN_LARGE_ZERR_PERCENTILES[-1]})."]
    if m is not None:
        flagged = pa > m
        why.append(f"MULTIPLE_PEAKS {m:.3f} on its own: catches {np.average(flagged[outlier], weights=w[outlier]):.0%}"
                   f" of the validation outliers and flags {np.average(flagged[~outlier], weights=w[~outlier]):.1%}"
                   " of the good objects.")
    return low_snr, large, m, why


def choose_multiple_peaks(z, z_true, p_alt) -> tuple[float, str]:
    """(threshold, why): the P_ALT above which MULTIPLE_PEAKS is set (module doc)."""
    from .metrics import OUTLIER_THRESHOLD
    from .pz_metrics import outliers
    z, z_true, p_alt = (np.asarray(v, dtype=float) for v in (z, z_true, p_alt))
    outlier = outliers(z, z_true)
    p_alt = np.where(np.isfinite(p_alt), p_alt, 0.0)
    n_out, n_good = int(outlier.sum()), int((~outlier).sum())
    if n_out < MIN_SELECTED or n_good < MIN_SELECTED:
        return MULTIPLE_PEAKS_FALLBACK, (
            f"MULTIPLE_PEAKS {MULTIPLE_PEAKS_FALLBACK:.3f}: fallback, {n_out} validation outliers and {n_good} "
            f"good objects are too few to choose on (at least {MIN_SELECTED} each).")
    best = None
    for t in MULTIPLE_PEAKS_SCAN:
        flagged = p_alt > t
        complete = float(flagged[outlier].mean())
        false = float(flagged[~outlier].mean())
        if false <= MULTIPLE_PEAKS_MAX_GOOD and (best is None or complete - false >= best[1] - best[2]):
            best = (float(t), complete, false)
    if best is None:
        t = float(MULTIPLE_PEAKS_SCAN[-1])
        flagged = p_alt > t
        return t, (f"MULTIPLE_PEAKS {t:.3f}: the largest P_ALT scanned; even it flags "
                   f"{flagged[~outlier].mean():.1%} of the good validation objects (more than "
                   f"{MULTIPLE_PEAKS_MAX_GOOD:.0%}), catching {flagged[outlier].mean():.0%} of the outliers.")
    t, complete, false = best
    return t, (f"MULTIPLE_PEAKS {t:.3f}: P_ALT above which the flag catches {complete:.0%} of the {n_out} "
               f"validation outliers (|dz|/(1+z) > {OUTLIER_THRESHOLD}) and flags {false:.1%} of the {n_good} "
               f"good objects; the largest catch-minus-false among thresholds flagging at most "
               f"{MULTIPLE_PEAKS_MAX_GOOD:.0%} of good objects.")
