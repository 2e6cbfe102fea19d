"""The network's outputs -> the catalogue's measurements: one path for the stage and for training.

The stage (``RedshiftStage.measure_chunk``) and training evaluation (``training.evaluate``,
``training.evaluate_generalisation``) both call :func:`measure_network`, so what a reference set
reports is what the stage writes: the calibrated Z and intervals under the Gaussian map the
calibration file's method names, p(z) as the set makes it, its second solution, the CNN estimate
and the out-of-distribution statistic. ZWARN bits are set in ``quality.zwarn_bits`` alone, from
:func:`zwarn_inputs`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class NetworkMeasurement:
    """Per object: the calibrated summary (``calibration.calibrated_summary``: Z, ZERR, Z_LO, Z_HI,
    Z_LO95, Z_HI95), the CNN estimate, the raw BNN sigma, p(z) rows, its second solution and the
    out-of-distribution distance."""
    summary: dict
    z_cnn: np.ndarray
    sigma_raw: np.ndarray
    pz: np.ndarray
    z_alt: np.ndarray
    p_alt: np.ndarray
    ood_distance: np.ndarray


def measure_network(*, mean, sigma, z_cnn, features, output, pz_maker, calibration, thresholds) -> NetworkMeasurement:
    """The catalogue's network measurements from the sampler's outputs.

    ``output``: the backbone's binned output (None where p(z) is the BNN's Gaussian);
    ``pz_maker``: ``pz.PzMaker`` of the set; ``calibration``: its ``CalibrationFile``;
    ``thresholds``: its ``Thresholds`` (for the OOD statistic).
    """
    from .calibration import calibrated_summary
    from .pz import alternative_peaks
    mean = np.asarray(mean, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    summary = calibrated_summary(calibration.applied, mean, sigma)
    pz = pz_maker(output=output, mean=mean, sigma=sigma)
    z_alt, p_alt = alternative_peaks(pz, pz_maker.grid)
    return NetworkMeasurement(summary=summary, z_cnn=np.asarray(z_cnn), sigma_raw=sigma, pz=pz, z_alt=z_alt,
                              p_alt=p_alt, ood_distance=thresholds.ood_distance(np.asarray(features, np.float64)))


def zwarn_inputs(m: NetworkMeasurement, *, npix_gv, npix_gi, coverage, snr_gi, repaired=None, summary=None):
    """``quality.ZwarnInputs`` of a measurement and the pixels it was made from (``summary``: the
    Z and intervals ZWARN judges, when not the network's own)."""
    from .quality import ZwarnInputs
    s = m.summary if summary is None else summary
    n = len(s["Z"])
    return ZwarnInputs(npix_gv=npix_gv, npix_gi=npix_gi, coverage=coverage, snr_gi=snr_gi, z=s["Z"],
                       z_lo=s["Z_LO"], z_hi=s["Z_HI"], zerr=s["ZERR"], ood_distance=m.ood_distance,
                       repaired=np.zeros(n, bool) if repaired is None else repaired,
                       p_alt=np.asarray(m.p_alt, dtype=np.float64))


def refined_summary(network_summary: dict, refinement) -> tuple[dict, np.ndarray]:
    """(summary, failed): the network's calibrated ``summary`` with Z and its intervals replaced by
    the template refinement's (``refine.refine``; intervals at the model's calibrated temperature)
    where it succeeded; ``failed``: where it did not (no window to fit, a minimum on a window
    edge), which keep the network's values. Objects without a network Z are neither."""
    from .refine import STATUS_OK, intervals
    out = {k: np.array(v, dtype=np.float64, copy=True) for k, v in network_summary.items()}
    measured = np.isfinite(out["Z"])
    ok = measured & (refinement.status == STATUS_OK) & np.isfinite(refinement.z)
    if ok.any():
        iv = intervals(refinement.subset(np.flatnonzero(ok)))
        out["Z"][ok] = refinement.z[ok]
        for key in ("Z_LO", "Z_HI", "ZERR", "Z_LO95", "Z_HI95"):
            if key in out:
                out[key][ok] = iv[key]
    return out, measured & ~ok
