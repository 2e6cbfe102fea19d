"""Simulate CSST GV/GI 1D slitless spectra in memory (arrays) for a population."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..datamodel import BANDS_USED, MAG_NORM_BAND
from . import forward, morphology
from .population import Population

log = logging.getLogger(__name__)

PAD_PIXELS = 100         # light up to this far outside a band can be dispersed into it
MAX_KERNEL_HALF = 90     # longest self-broadening kernel (pixels each side)


@dataclass(frozen=True)
class SimOptions:
    """Instrument variations and degradations; all off (nominal) by default.

    Each ``*_range`` is (low, high) of a per-object uniform draw, ``None`` for the nominal
    instrument; every drawn value is recorded per object in TRUTH (docs/simulation.md).
    """
    wave_shift_max: float = 0.0      # uniform wavelength-calibration shift in +-pixels
    mask_run_prob: float = 0.0       # chance per band of one masked run of pixels
    mask_run_max: int = 40           # longest masked run (pixels)
    missing_band_prob: float = 0.0   # chance that one band (GV or GI) is absent
    resolution_range: tuple | None = None   # R = lambda / FWHM of the LSF, both bands
    psf_added_prob: float = 0.0      # chance the PSF is added to the LSF rather than inside R
    disp_scale_range: tuple | None = None   # true / nominal dispersion
    err_scale_range: tuple | None = None    # reported ERR / true sigma
    flux_tilt_range: tuple | None = None    # fractional flux-calibration error at the red end
    sky_scale_range: tuple | None = None    # sky level / nominal
    gauss_kernel_prob: float = 0.0   # chance the self-broadening kernel is a Gaussian, not Sersic

    def nominal(self) -> bool:
        return self == SimOptions()


# The ranges the training sets are drawn with (`simulate --variations training`,
# `regenerate`); the shifted test sets of the evaluation sit at and beyond their edges.
TRAINING_VARIATIONS = SimOptions(
    wave_shift_max=1.0, resolution_range=(200.0, 300.0), psf_added_prob=0.5,
    disp_scale_range=(0.95, 1.05), err_scale_range=(0.85, 1.15), flux_tilt_range=(-0.10, 0.10),
    sky_scale_range=(0.8, 1.2), gauss_kernel_prob=0.5)


@dataclass
class BandSpectra:
    wave: np.ndarray                 # (L,) pixel centres, Angstrom
    flux: np.ndarray                 # (N, L) float32, 1e-17 erg/s/cm2/A
    err: np.ndarray                  # (N, L) float32; <= 0 marks a bad pixel
    model: np.ndarray                # (N, L) float32 noiseless flux
    conv: np.ndarray                 # (L,) electrons per flux unit
    bkgvar: np.ndarray               # (N,) background + dark + read variance, electrons^2
    background: np.ndarray           # (N,) sky + dark electrons per pixel (over the extraction rows)
    readvar: np.ndarray              # (N,) read-noise variance per pixel, electrons^2
    present: np.ndarray              # (N,) bool, False where the band is missing
    snr: np.ndarray                  # (N,) mean over valid pixels of max(FLUX,0)/ERR
    shift: np.ndarray                # (N,) applied wavelength shift, pixels
    tilt_shape: np.ndarray | None = None   # (L,) flux-calibration tilt per unit FLUX_TILT (tilt_factor)


@dataclass
class SimulatedSpectra:
    objid: np.ndarray
    population: Population
    bands: dict = field(default_factory=dict)    # band name -> BandSpectra
    variations: dict = field(default_factory=dict)   # per-object instrument draws (TRUTH columns)

    def __len__(self):
        return self.objid.size


def ab_amplitude(sedlib, rest_flux, z, mag, band):
    """Factor turning rest-frame F_lambda into observed product flux units at AB magnitude ``mag``.

    Photon-counting AB magnitude through ``band``'s grating throughput.
    """
    fnu = forward.photon_weighted_fnu(sedlib.wave, rest_flux, np.asarray(z, float),
                                      band.throughput_wave, band.throughput)
    fnu = np.maximum(fnu, 1e-300) * forward.FLUX_SCALE
    mag_raw = -2.5 * np.log10(fnu) - 48.6
    return 10.0 ** (-0.4 * (mag - mag_raw))


def extraction_rows(instrument, pop):
    """Detector rows the 1D extraction sums: enough to hold AP_FRAC of the cross-dispersion light."""
    p = instrument.p
    s_y = morphology.projected_scale(pop.r_eff, pop.axis_ratio, pop.pa + 90.0)
    h_gal = morphology.enclosed_halfwidth(pop.sersic_n, p("AP_FRAC")) * s_y / p("PIXSCALE")
    sig_psf = p("PSF_FWHM") / 2.3548 / p("PIXSCALE")
    h = np.sqrt(h_gal ** 2 + (1.645 * sig_psf) ** 2)
    return np.clip(np.ceil(2 * h), p("APMINROW"), p("APMAXROW"))


def band_snr(flux, err):
    valid = (err > 0) & np.isfinite(err) & np.isfinite(flux)
    ratio = np.where(valid, np.clip(flux, 0, None) / np.where(valid, err, 1.0), 0.0)
    n = valid.sum(axis=1)
    return np.where(n > 0, ratio.sum(axis=1) / np.maximum(n, 1), 0.0)


CHUNK = 2000     # objects whose rest-frame SEDs are built and rendered at once (memory flat in N)


def draw_variations(n, instrument, options: SimOptions, rng) -> dict:
    """Per-object instrument variations; nominal values (and no random draws) where off."""
    p = instrument.p

    def uniform(rng_range, nominal):
        if rng_range is None:
            return np.full(n, float(nominal))
        lo, hi = rng_range
        return rng.uniform(lo, hi, n) if hi > lo else np.full(n, float(lo))

    r_nominal = instrument["GI"].resolution
    v = {"resolution": uniform(options.resolution_range, r_nominal),
         "psf_added": (rng.random(n) < options.psf_added_prob if options.psf_added_prob > 0
                       else np.full(n, p("PSFINR") == 0)).astype(np.int16),
         "disp_scale": uniform(options.disp_scale_range, 1.0),
         "err_scale": uniform(options.err_scale_range, 1.0),
         "flux_tilt": uniform(options.flux_tilt_range, 0.0),
         "sky_scale": uniform(options.sky_scale_range, 1.0),
         "morph_kernel": (rng.random(n) < options.gauss_kernel_prob).astype(np.int16)
         if options.gauss_kernel_prob > 0 else np.zeros(n, np.int16)}
    return v


def tilt_shape(instrument, wave):
    """(L,) the tilt per unit FLUX_TILT: 0 at the middle of GV+GI, 1 at the red end."""
    lo, hi = instrument.p("GV_WMIN"), instrument.p("GI_WMAX")
    mid = 0.5 * (lo + hi)
    return (np.asarray(wave, float) - mid) / (hi - mid)


def tilt_factor(instrument, wave, tilt):
    """(N, L) flux-calibration factor: 1 at the middle of GV+GI, 1 + tilt at the red end."""
    return 1.0 + np.asarray(tilt, float)[:, None] * tilt_shape(instrument, wave)[None, :]


def simulate_spectra(pop: Population, instrument, sedlib, rng: np.random.Generator,
                     options: SimOptions = SimOptions(), objid=None, noise: bool = True,
                     rest_flux=None, amplitude=None) -> SimulatedSpectra:
    """Render ``pop`` through the instrument.

    ``sedlib`` is the run's FamilySet (or a bare SED library: its default families).
    ``rest_flux`` (N, W) and ``amplitude`` (N,) replace the population's SEDs and their
    magnitude scaling; the evaluation uses them to render bare template vectors.
    The rest-frame SEDs are built CHUNK objects at a time, so memory does not grow with N.
    """
    from .families import as_family_set
    families = as_family_set(sedlib)
    n = len(pop)
    objid = np.arange(1, n + 1, dtype=np.int64) if objid is None else np.asarray(objid, np.int64)
    lnw = np.log(families.wave)
    rest_edges = np.exp(np.concatenate([[lnw[0] - (lnw[1] - lnw[0]) / 2],
                                        (lnw[1:] + lnw[:-1]) / 2, [lnw[-1] + (lnw[-1] - lnw[-2]) / 2]]))
    rows = extraction_rows(instrument, pop)
    p = instrument.p
    u, table = morphology.marginal_table()
    missing = np.full(n, "", dtype="U2")
    if options.missing_band_prob > 0:
        drop = rng.random(n) < options.missing_band_prob
        missing[drop] = rng.choice(np.array(BANDS_USED), drop.sum())
    var = draw_variations(n, instrument, options, rng)
    shifts = {b: (rng.uniform(-options.wave_shift_max, options.wave_shift_max, n)
                  if options.wave_shift_max > 0 else np.zeros(n)) for b in BANDS_USED}
    psf_pix2 = (p("PSF_FWHM") / 2.3548 / p("PIXSCALE")) ** 2
    geometry = {}
    for bname in BANDS_USED:
        band = instrument[bname]
        centres, edges = forward.band_grid(band, PAD_PIXELS)
        scale_pix = morphology.projected_scale(pop.r_eff, pop.axis_ratio, pop.pa) / p("PIXSCALE")
        gauss = np.where(var["morph_kernel"] == 1, scale_pix * morphology.marginal_rms(
            pop.sersic_n, MAX_KERNEL_HALF / np.maximum(scale_pix, 1e-6)), 0.0)
        geometry[bname] = dict(
            centres=centres, edges=edges, conv_pad=forward.electrons_per_flux(instrument, band, centres),
            lsf=centres / band.resolution / 2.3548 / band.dispersion, scale_pix=scale_pix, gauss=gauss,
            # Without a drawn R each band keeps its own nominal R (TRUTH RESOLUTION reports GI's).
            lsf_scale=(band.resolution / var["resolution"] if options.resolution_range is not None
                       else np.ones(n)) / var["disp_scale"],
            lsf_add2=np.where(var["psf_added"] == 1, psf_pix2, 0.0),
            electrons=np.empty((n, band.wavelength.size)))
    for start in range(0, n, CHUNK):
        sl = slice(start, min(n, start + CHUNK))
        rest = (families.rest_flux(pop, np.arange(sl.start, sl.stop)) if rest_flux is None
                else np.ascontiguousarray(rest_flux[sl], dtype=float))
        amp = (ab_amplitude(families, rest, pop.z[sl], pop.mag[sl], instrument[MAG_NORM_BAND]) if amplitude is None
               else np.asarray(amplitude, float)[sl])
        for bname in BANDS_USED:
            band, g = instrument[bname], geometry[bname]
            forward.render_band(rest_edges, rest, pop.z[sl].astype(float), amp.astype(float),
                                shifts[bname][sl].astype(float), g["edges"], band.dispersion, g["conv_pad"],
                                g["lsf"], table, morphology.SERSIC_N_GRID, morphology.U_STEP,
                                pop.sersic_n[sl].astype(float), g["scale_pix"][sl].astype(float),
                                MAX_KERNEL_HALF, PAD_PIXELS, band.wavelength.size, g["electrons"][sl],
                                g["lsf_scale"][sl].astype(float), g["lsf_add2"][sl].astype(float),
                                var["disp_scale"][sl].astype(float), 0.5 * (band.wmin + band.wmax),
                                g["gauss"][sl].astype(float))
    out = SimulatedSpectra(objid=objid, population=pop, variations=var)
    for bname in BANDS_USED:
        band, g = instrument[bname], geometry[bname]
        electrons = g["electrons"]
        n_out = band.wavelength.size
        conv = g["conv_pad"][PAD_PIXELS:PAD_PIXELS + n_out]
        background = (band.sky * var["sky_scale"] + p("DARK")) * p("T_EXP") * p("N_EXP") * rows
        readvar = p("RDNOISE") ** 2 * p("N_EXP") * rows
        if noise:
            measured, err_e = forward.add_noise(electrons, background[:, None], readvar[:, None], rng)
        else:
            measured = electrons
            err_e = np.sqrt(np.clip(electrons, 0, None) + (background + readvar)[:, None])
        tilt = tilt_factor(instrument, band.wavelength, var["flux_tilt"])
        flux = (measured / conv * tilt).astype(np.float32)
        err = (err_e / conv * tilt * var["err_scale"][:, None]).astype(np.float32)
        if options.mask_run_prob > 0:
            hit = np.where(rng.random(n) < options.mask_run_prob)[0]
            for i in hit:
                length = int(rng.integers(1, options.mask_run_max + 1))
                start = int(rng.integers(0, max(1, n_out - length)))
                err[i, start:start + length] = 0.0
        present = missing != bname
        out.bands[bname] = BandSpectra(
            wave=band.wavelength.copy(), flux=flux, err=err, model=(electrons / conv * tilt).astype(np.float32),
            conv=conv, bkgvar=background + readvar, background=background, readvar=np.broadcast_to(readvar, (n,)).copy(),
            present=present, snr=np.where(present, band_snr(flux, err), 0.0), shift=shifts[bname],
            tilt_shape=tilt_shape(instrument, band.wavelength))
    return out
