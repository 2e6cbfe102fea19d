"""The simulated galaxy population: redshifts, SEDs, shapes and magnitudes.

* Redshift: flat over [0, zmax] for training; for test sets the CSST-like n(z)
  proportional to z^2 exp(-(z / 0.35)^1.5) on 0 < z < 1.5 (an assumption standing in for
  Gong et al. 2019's table; mean about 0.53).
* Shapes like the paper's Figure 2: r_eff mostly 0.3-3 arcsec, Sersic n from 0.5 to 6 with
  a pile-up at 6, b/a from 0.2 to 1, position angle uniform.
* Magnitudes (AB, through the GI grating curve) are independent of the SED and broad at
  fixed z, so the noise level does not give the redshift away: a bright edge that fades
  with z, MAG_BRIGHT_Z0 + MAG_SLOPE log10(1 + z), plus an exponential tail to faint
  magnitudes (scale MAG_FAINT_TAIL) smoothed by MAG_SMOOTH; standard deviation about
  0.9 mag at fixed z. The shape is chosen so the signal-to-noise matches the paper: the GI
  mean-pixel SNR histogram peaks near 2 and most GV spectra are below 1 (a symmetric
  1-mag Gaussian cannot do both: its log-SNR histogram is flat-topped, its mode wanders
  below 1.5 and GV < 1 falls to 0.59; docs/simulation.md).
* SEDs: drawn from the run's SED families (families/), each object's family, index,
  coefficients and physical parameters recorded.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..datamodel import N_SED_PARAM
from .families import as_family_set

POPULATIONS = ("train", "test")
NZ_ZMAX = 1.5
NZ_Z0 = 0.35
TRAIN_ZMAX = 1.6

# Magnitude model: MAG_NORM = MAG_BRIGHT_Z0 + MAG_SLOPE log10(1 + z) + Exp(MAG_FAINT_TAIL)
# + N(0, MAG_SMOOTH), clipped to MAG_RANGE.
MAG_BRIGHT_Z0 = 18.7
MAG_SLOPE = 6.5
MAG_FAINT_TAIL = 0.9
MAG_SMOOTH = 0.15
MAG_RANGE = (16.0, 25.0)


@dataclass
class Population:
    z: np.ndarray
    mag: np.ndarray
    r_eff: np.ndarray
    sersic_n: np.ndarray
    axis_ratio: np.ndarray
    pa: np.ndarray
    sed_lib: np.ndarray        # SED family name per object
    sed_index: np.ndarray
    sed_coeff: np.ndarray      # (N, N_SED_COEFF)
    sed_param: np.ndarray = None   # (N, N_SED_PARAM) physical parameters, NaN where unused

    def __post_init__(self):
        if self.sed_param is None:
            self.sed_param = np.full((self.z.size, N_SED_PARAM), np.nan)

    def __len__(self):
        return self.z.size


def csst_nz_sample(n: int, rng: np.random.Generator) -> np.ndarray:
    grid = np.linspace(0.0, NZ_ZMAX, 3001)
    pdf = grid ** 2 * np.exp(-(grid / NZ_Z0) ** 1.5)
    cdf = np.cumsum(pdf)
    cdf /= cdf[-1]
    return np.interp(rng.random(n), cdf, grid)


def redshift_pdf(z, kind: str, zmax: float = TRAIN_ZMAX) -> np.ndarray:
    """The normalised redshift density of a population at z (0 outside its range).

    Used to reweight a set drawn from one population to the other (calibration).
    """
    z = np.asarray(z, dtype=float)
    if kind == "train":
        return np.where((z >= 0) & (z <= zmax), 1.0 / zmax, 0.0)
    if kind != "test":
        raise ValueError(f"population must be one of {POPULATIONS}, not {kind!r}")
    grid = np.linspace(0.0, NZ_ZMAX, 3001)
    norm = np.trapezoid(grid ** 2 * np.exp(-(grid / NZ_Z0) ** 1.5), grid)
    inside = (z >= 0) & (z <= NZ_ZMAX)
    zc = np.where(inside, z, 0.0)
    return np.where(inside, zc ** 2 * np.exp(-(zc / NZ_Z0) ** 1.5) / norm, 0.0)


def draw_population(n: int, kind: str, rng: np.random.Generator, sed_source,
                    zmax: float = TRAIN_ZMAX) -> Population:
    """``n`` objects of population ``kind``; ``sed_source`` is a FamilySet or an SED library."""
    if kind not in POPULATIONS:
        raise ValueError(f"population must be one of {POPULATIONS}, not {kind!r}")
    families = as_family_set(sed_source)
    z = rng.uniform(0.0, zmax, n) if kind == "train" else csst_nz_sample(n, rng)
    mag = np.clip(MAG_BRIGHT_Z0 + MAG_SLOPE * np.log10(1 + z) + rng.exponential(MAG_FAINT_TAIL, n)
                  + rng.normal(0.0, MAG_SMOOTH, n), *MAG_RANGE)
    r_eff = np.clip(np.exp(rng.normal(np.log(0.7), 0.55, n)), 0.1, 5.0)
    pile = rng.random(n) < 0.25
    sersic = np.where(pile, 6.0, np.clip(np.exp(rng.normal(np.log(1.3), 0.5, n)), 0.5, 6.0))
    q = rng.uniform(0.2, 1.0, n)
    pa = rng.uniform(0.0, 180.0, n)
    sed_lib, sed_index, sed_coeff, sed_param = families.draw(z, rng)
    return Population(z=z, mag=mag, r_eff=r_eff, sersic_n=sersic, axis_ratio=q, pa=pa,
                      sed_lib=sed_lib, sed_index=sed_index, sed_coeff=sed_coeff, sed_param=sed_param)
