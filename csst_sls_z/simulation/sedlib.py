"""Rest-frame SED libraries for the simulator, read from the ``sedlib`` reference file.

Two libraries, both reduced to what R~250 needs and sampled on one log-wavelength grid:

* ``REDROCK2016``: the 2016 DESI Redrock galaxy PCA basis (5 vectors) with its 750
  archetype coefficient vectors (BSD-3, DESI Collaboration; licence in
  reference_files/LICENSE-redrock-templates.md).
* ``KCORRECT``: the 5 non-negative kcorrect v4 templates (Blanton & Roweis 2007, BSD-3),
  with mixtures fitted to the SDSS galaxies that the kcorrect package ships.

A spectrum is ``coeff @ basis`` (F_lambda, arbitrary scale) on ``wave``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy.ndimage import gaussian_filter1d

from ..reffiles.header import open_reference_file, reference_header, write_fits_atomic

log = logging.getLogger(__name__)

LIBRARIES = ("REDROCK2016", "KCORRECT")
# Rest-frame grid: FWHM_rest = lambda / 1000 is 4x finer than R = 250 needs at any z,
# sampled 2.5 times per FWHM in ln(lambda).
LOG_STEP = 4e-4
SMOOTH_R = 1000.0
REST_WMIN = 1170.0
REST_WMAX = 11500.0     # GI reaches 10500 A at z = 0; Redrock ends at 10000 A (extended flat)


@dataclass(frozen=True)
class SEDLibrary:
    wave: np.ndarray                          # rest-frame Angstrom, log-spaced
    basis: dict = field(repr=False)           # library -> (5, n_wave) float64
    coeffs: dict = field(repr=False)          # library -> (n_gal, 5) float64
    path: str = ""

    def spectra(self, library: str, coeff: np.ndarray) -> np.ndarray:
        """Rest-frame F_lambda for each row of ``coeff``, clipped at zero (PCA can go negative in the UV)."""
        flux = np.atleast_2d(coeff) @ self.basis[library]
        return np.maximum(flux, 0.0, out=flux)


def rest_grid() -> np.ndarray:
    n = int(np.floor(np.log(REST_WMAX / REST_WMIN) / LOG_STEP)) + 1
    return REST_WMIN * np.exp(LOG_STEP * np.arange(n))


def _reduce(wave_in: np.ndarray, flux_in: np.ndarray, wave_out: np.ndarray) -> np.ndarray:
    """Smooth to FWHM = lambda / SMOOTH_R (constant in ln lambda) and resample to ``wave_out``."""
    fine_step = LOG_STEP / 8
    lnw = np.arange(np.log(wave_in[0]), np.log(wave_in[-1]), fine_step)
    fine = np.interp(lnw, np.log(wave_in), flux_in)
    sigma = (1.0 / SMOOTH_R) / 2.3548 / fine_step
    fine = gaussian_filter1d(fine, sigma, mode="nearest")
    out = np.interp(np.log(wave_out), lnw, fine, left=np.nan, right=np.nan)
    # Beyond the input's red end, continue flat at the median of its last 300 A.
    red = wave_out > wave_in[-1]
    if red.any():
        tail = (wave_in > wave_in[-1] - 300)
        out[red] = np.median(flux_in[tail])
    blue = wave_out < wave_in[0]
    out[blue] = flux_in[0]
    return out


def _redrock(path: Path, wave: np.ndarray):
    with fits.open(path) as hdul:
        hdr = hdul[0].header
        basis = np.asarray(hdul[0].data, float)
        coeff = np.asarray(hdul["ARCHETYPE_COEFF"].data, float)
    w = hdr["CRVAL1"] + hdr["CDELT1"] * np.arange(basis.shape[1])
    reduced = np.array([_reduce(w, b, wave) for b in basis])
    return reduced, coeff


def _kcorrect(wave: np.ndarray, n_galaxies: int, seed: int):
    import kcorrect.kcorrect
    pkg = Path(kcorrect.__file__).parent / "data"
    with fits.open(pkg / "templates" / "kcorrect-default-v4.fits") as hdul:
        kw = np.asarray(hdul["FLUX"].data["wave"][0], float)
        kf = np.asarray(hdul["FLUX"].data["flux"][0], float).reshape(5, -1)
    basis = np.array([_reduce(kw, f, wave) for f in kf])
    # Normalise each template at 5500 A so coefficients are comparable.
    basis /= basis[:, [np.searchsorted(wave, 5500.0)]]
    with fits.open(pkg / "test" / "gst_tests_small.fits") as hdul:
        gal = hdul[1].data
        flux = np.asarray(gal["MODELFLUX"], float) * 1e-9        # nanomaggies -> maggies
        ivar = np.asarray(gal["MODELFLUX_IVAR"], float) * 1e18
        z = np.asarray(gal["Z"], float)
    good = np.where((z > 0.01) & (z < 0.6) & np.all(ivar > 0, axis=1) & np.all(flux > 0, axis=1))[0]
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(good, size=min(n_galaxies, good.size), replace=False))
    # kcorrect's own non-negative fit of its templates to each galaxy's SDSS ugriz photometry.
    kc = kcorrect.kcorrect.Kcorrect(responses=["sdss_u0", "sdss_g0", "sdss_r0", "sdss_i0", "sdss_z0"])
    coeffs = np.asarray(kc.fit_coeffs(redshift=z[pick], maggies=flux[pick], ivar=ivar[pick]), float)
    # kcorrect coefficients multiply its template units; re-express on our normalised basis.
    coeffs = coeffs * np.asarray([np.interp(5500.0, kw, f) for f in kf])[None, :]
    keep = coeffs.sum(axis=1) > 0
    coeffs = coeffs[keep] / coeffs[keep].sum(axis=1, keepdims=True)
    return basis, coeffs, pick[keep]


def build_sedlib_file(redrock_path: Path, out_path: Path, n_kcorrect: int = 2000, seed: int = 2024,
                      pedigree: str = "SIMULATION", overwrite: bool = False) -> Path:
    wave = rest_grid()
    rr_basis, rr_coeff = _redrock(Path(redrock_path), wave)
    kc_basis, kc_coeff, kc_rows = _kcorrect(wave, n_kcorrect, seed)
    hdr = reference_header(
        "sedlib", pedigree, "rest-frame SED libraries reduced for R~250",
        history=[
            "REDROCK2016: DESI Redrock galaxy template 2016 (rrtemplate-galaxy-2016.fits), BSD-3,",
            "  DESI Collaboration; 5 PCA vectors and 750 archetype coefficient vectors.",
            f"  Smoothed to FWHM = lambda/{SMOOTH_R:g}, log step {LOG_STEP:g}; flat beyond 10000 A rest.",
            "KCORRECT: kcorrect v4 default templates (Blanton & Roweis 2007), BSD-3; mixtures",
            f"  fitted by kcorrect to {kc_coeff.shape[0]} SDSS galaxies of gst_tests_small.fits (seed {seed}).",
        ])
    hdr["LOGSTEP"] = LOG_STEP
    hdr["SMOOTHR"] = SMOOTH_R
    hdus = [fits.PrimaryHDU(header=hdr),
            fits.ImageHDU(wave, name="WAVE"),
            fits.ImageHDU(rr_basis.astype(np.float32), name="REDROCK2016_BASIS"),
            fits.ImageHDU(rr_coeff, name="REDROCK2016_COEFF"),
            fits.ImageHDU(kc_basis.astype(np.float32), name="KCORRECT_BASIS"),
            fits.ImageHDU(kc_coeff, name="KCORRECT_COEFF"),
            fits.ImageHDU(kc_rows.astype(np.int32), name="KCORRECT_SDSS_ROW")]
    hdus[1].header["BUNIT"] = "Angstrom"
    return write_fits_atomic(fits.HDUList(hdus), out_path, overwrite=overwrite)


def load_sedlib(path: Path) -> SEDLibrary:
    with open_reference_file(path, "sedlib") as hdul:
        wave = np.array(hdul["WAVE"].data, float)
        basis = {lib: np.array(hdul[f"{lib}_BASIS"].data, float) for lib in LIBRARIES}
        coeffs = {lib: np.array(hdul[f"{lib}_COEFF"].data, float) for lib in LIBRARIES}
    return SEDLibrary(wave=wave, basis=basis, coeffs=coeffs, path=str(path))
