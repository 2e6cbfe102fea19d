"""ZWARN: every rule that sets a bit, in one place.

The bits and their meanings are ``datamodel.ZWarn`` / ``ZWARN_MEANINGS``; the numbers the
rules compare against are the ``thresholds`` reference file (``reffiles.tables.Thresholds``, one
value per ``datamodel.THRESHOLD_KEYWORDS`` line). What the rules read about each object is one
record, :class:`ZwarnInputs`. A new bit is a member of ``ZWarn`` with its meaning, and its rule
here (with a field of ``ZwarnInputs`` if it needs a new measurement); a trained threshold adds
its ``THRESHOLD_KEYWORDS`` line and its choice in ``training/threshold_choice.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .datamodel import ZWarn


@dataclass(frozen=True)
class ZwarnInputs:
    """What the ZWARN rules read, one value per object (arrays of one length).

    Measurements the stage could not make are NaN; they never raise a bit by accident.
    """
    npix_gv: np.ndarray            # valid native pixels in GV
    npix_gi: np.ndarray            # valid native pixels in GI
    coverage: np.ndarray           # fraction of the network grid with valid data
    snr_gi: np.ndarray             # SNR_GI
    z: np.ndarray                  # calibrated Z (NaN where not measured)
    z_lo: np.ndarray               # calibrated central 68% interval
    z_hi: np.ndarray
    zerr: np.ndarray               # calibrated ZERR
    ood_distance: np.ndarray       # feature distance from the training set (NaN where not measured)
    repaired: np.ndarray | None = None          # bool: the input had to be repaired
    duplicate_objid: np.ndarray | None = None   # bool: the OBJID is repeated in the product
    p_alt: np.ndarray | None = None             # P_ALT: probability in the second peak of p(z) (pz.py)
    refine_failed: np.ndarray | None = None     # bool: the refinement ran on no usable window or hit an edge

    def __len__(self) -> int:
        return int(np.asarray(self.npix_gv).size)


def zwarn_bits(inputs: ZwarnInputs, thresholds) -> np.ndarray:
    """The ZWARN mask of every object (int32), from ``inputs`` and the ``thresholds`` file's values."""
    n = len(inputs)
    npix_gv, npix_gi = np.asarray(inputs.npix_gv), np.asarray(inputs.npix_gi)
    z, z_lo, z_hi, zerr = inputs.z, inputs.z_lo, inputs.z_hi, inputs.zerr
    zwarn = np.zeros(n, dtype=np.int64)
    nodata = (npix_gv == 0) & (npix_gi == 0)
    zwarn |= np.where(nodata, int(ZWarn.NODATA), 0)
    zwarn |= np.where((npix_gv == 0) | (npix_gi == 0), int(ZWarn.MISSING_BAND), 0)
    zwarn |= np.where(inputs.coverage < thresholds.min_coverage, int(ZWarn.LITTLE_COVERAGE), 0)
    zwarn |= np.where(inputs.snr_gi < thresholds.low_snr, int(ZWarn.LOW_SNR), 0)
    measured = np.isfinite(z)
    edge = measured & ((z_lo <= thresholds.z_min) | (z_hi >= thresholds.z_max))
    zwarn |= np.where(edge, int(ZWarn.Z_FITLIMIT), 0)
    with np.errstate(invalid="ignore"):
        large = measured & (zerr / (1.0 + z) > thresholds.large_zerr)
        ood = np.isfinite(inputs.ood_distance) & (inputs.ood_distance > thresholds.ood_max)
    # An object with data whose redshift came out non-finite (the network overflowed on absurd
    # input) is as unlike the training set as can be: never a NaN redshift with ZWARN == 0.
    ood |= ~nodata & ~measured
    zwarn |= np.where(large, int(ZWarn.LARGE_ZERR), 0)
    bad_input = np.zeros(n, dtype=bool)
    for flag in (inputs.repaired, inputs.duplicate_objid):
        if flag is not None:
            bad_input |= np.asarray(flag, dtype=bool)
    zwarn |= np.where(bad_input, int(ZWarn.BAD_INPUT), 0)
    zwarn |= np.where(ood, int(ZWarn.OUT_OF_DISTRIBUTION), 0)
    # MULTIPLE_PEAKS: a second solution holding more than the stored P_ALT. A thresholds file without
    # the number (every set chosen before the bit existed) disables the bit, so its ZWARN is unchanged.
    p_alt_max = getattr(thresholds, "multiple_peaks", None)
    if inputs.p_alt is not None and p_alt_max is not None:
        p_alt = np.asarray(inputs.p_alt, dtype=float)
        with np.errstate(invalid="ignore"):
            zwarn |= np.where(np.isfinite(p_alt) & (p_alt > p_alt_max), int(ZWarn.MULTIPLE_PEAKS), 0)
    # REFINE_FAILED: the refinement ran (a set with a refinement file, not --no-refine) and found no
    # window to fit or its best minimum on a window's edge; Z is then the network's.
    if inputs.refine_failed is not None:
        zwarn |= np.where(np.asarray(inputs.refine_failed, dtype=bool), int(ZWarn.REFINE_FAILED), 0)
    return zwarn.astype(np.int32)


def zwarn_counts(zwarn: np.ndarray) -> dict:
    """Objects with each bit set, by bit name (plus the usable count, ZWARN == 0)."""
    counts = {flag.name: int(np.count_nonzero(zwarn & int(flag))) for flag in ZWarn}
    counts["OK"] = int(np.count_nonzero(zwarn == 0))
    return counts
