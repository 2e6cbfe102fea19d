"""ZWARN bits from the measurements and the thresholds stored in the reference files."""
from __future__ import annotations

import numpy as np

from .datamodel import ZWarn

MIN_COVERAGE = 0.5     # LITTLE_COVERAGE: under half of the network grid has valid data (products.md)


def zwarn_bits(npix_gv, npix_gi, coverage, snr_gi, z, z_lo, z_hi, zerr, repaired, ood_distance, thresholds):
    """The ZWARN mask of every object (int32). NaN measurements never raise a bit by accident."""
    n = np.asarray(npix_gv).size
    zwarn = np.zeros(n, dtype=np.int64)
    nodata = (npix_gv == 0) & (npix_gi == 0)
    zwarn |= np.where(nodata, int(ZWarn.NODATA), 0)
    zwarn |= np.where((npix_gv == 0) | (npix_gi == 0), int(ZWarn.MISSING_BAND), 0)
    zwarn |= np.where(coverage < MIN_COVERAGE, int(ZWarn.LITTLE_COVERAGE), 0)
    zwarn |= np.where(snr_gi < thresholds.low_snr, int(ZWarn.LOW_SNR), 0)
    measured = np.isfinite(z)
    edge = measured & ((z_lo <= thresholds.z_min) | (z_hi >= thresholds.z_max))
    zwarn |= np.where(edge, int(ZWarn.Z_FITLIMIT), 0)
    with np.errstate(invalid="ignore"):
        large = measured & (zerr / (1.0 + z) > thresholds.large_zerr)
        ood = np.isfinite(ood_distance) & (ood_distance > thresholds.ood_max)
    # An object with data whose redshift came out non-finite (the network overflowed on absurd
    # input) is as unlike the training set as can be: never a NaN redshift with ZWARN == 0.
    ood |= ~nodata & ~measured
    zwarn |= np.where(large, int(ZWarn.LARGE_ZERR), 0)
    zwarn |= np.where(repaired, int(ZWarn.BAD_INPUT), 0)
    zwarn |= np.where(ood, int(ZWarn.OUT_OF_DISTRIBUTION), 0)
    return zwarn.astype(np.int32)


def zwarn_counts(zwarn: np.ndarray) -> dict:
    """Objects with each bit set, by bit name (plus the usable count, ZWARN == 0)."""
    counts = {flag.name: int(np.count_nonzero(zwarn & int(flag))) for flag in ZWarn}
    counts["OK"] = int(np.count_nonzero(zwarn == 0))
    return counts
