"""The simulated galaxy population: redshifts, SEDs, shapes and magnitudes.

* Redshift: flat over [0, zmax] for training; for test sets the CSST-like n(z)
  proportional to z^2 exp(-(z / 0.35)^1.5) on 0 < z < 1.5 (an assumption standing in for
  Gong et al. 2019's table; mean about 0.53).
* Shapes like the paper's Figure 2: r_eff mostly 0.3-3 arcsec, Sersic n from 0.5 to 6 with
  a pile-up at 6, b/a from 0.2 to 1, position angle uniform.
* Magnitudes (AB, through the GI grating curve) fall with redshift and are tuned so the
  signal-to-noise matches the paper: GI mean-pixel SNR peaking near 2, most GV spectra
  below 1 (docs/simulation.md shows the histograms).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POPULATIONS = ("train", "test")
NZ_ZMAX = 1.5
NZ_Z0 = 0.35
TRAIN_ZMAX = 1.6

# Magnitude model: MAG_NORM ~ N(MAG_Z0 + MAG_SLOPE * log10(1 + z), MAG_SCATTER), clipped.
MAG_Z0 = 19.35
MAG_SLOPE = 6.5
MAG_SCATTER = 0.25
MAG_RANGE = (17.0, 24.0)
# Share of objects drawn from the Redrock archetypes (bluer, ELG-rich); the rest are
# kcorrect fits to SDSS galaxies (redder), as the paper's BOSS-heavy sample is.
REDROCK_FRACTION = 0.2


@dataclass
class Population:
    z: np.ndarray
    mag: np.ndarray
    r_eff: np.ndarray
    sersic_n: np.ndarray
    axis_ratio: np.ndarray
    pa: np.ndarray
    sed_lib: np.ndarray        # library name per object
    sed_index: np.ndarray
    sed_coeff: np.ndarray      # (N, 5)

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


def draw_population(n: int, kind: str, rng: np.random.Generator, sedlib,
                    zmax: float = TRAIN_ZMAX) -> Population:
    if kind not in POPULATIONS:
        raise ValueError(f"population must be one of {POPULATIONS}, not {kind!r}")
    z = rng.uniform(0.0, zmax, n) if kind == "train" else csst_nz_sample(n, rng)
    mag = np.clip(rng.normal(MAG_Z0 + MAG_SLOPE * np.log10(1 + z), MAG_SCATTER), *MAG_RANGE)
    r_eff = np.clip(np.exp(rng.normal(np.log(0.7), 0.55, n)), 0.1, 5.0)
    pile = rng.random(n) < 0.25
    sersic = np.where(pile, 6.0, np.clip(np.exp(rng.normal(np.log(1.3), 0.5, n)), 0.5, 6.0))
    q = rng.uniform(0.2, 1.0, n)
    pa = rng.uniform(0.0, 180.0, n)
    use_rr = rng.random(n) < REDROCK_FRACTION
    sed_lib = np.where(use_rr, "REDROCK2016", "KCORRECT")
    sed_index = np.empty(n, dtype=np.int32)
    sed_coeff = np.empty((n, 5))
    for lib, sel in (("REDROCK2016", use_rr), ("KCORRECT", ~use_rr)):
        pool = sedlib.coeffs[lib]
        idx = rng.integers(0, pool.shape[0], sel.sum())
        sed_index[sel] = idx
        sed_coeff[sel] = pool[idx]
    return Population(z=z, mag=mag, r_eff=r_eff, sersic_n=sersic, axis_ratio=q, pa=pa,
                      sed_lib=sed_lib, sed_index=sed_index, sed_coeff=sed_coeff)
