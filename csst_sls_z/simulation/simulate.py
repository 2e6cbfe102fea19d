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


@dataclass
class SimOptions:
    """Degradations for robustness studies; all off by default."""
    wave_shift_max: float = 0.0      # uniform wavelength-calibration shift in +-pixels
    mask_run_prob: float = 0.0       # chance per band of one masked run of pixels
    mask_run_max: int = 40           # longest masked run (pixels)
    missing_band_prob: float = 0.0   # chance that one band (GV or GI) is absent


@dataclass
class BandSpectra:
    wave: np.ndarray                 # (L,) pixel centres, Angstrom
    flux: np.ndarray                 # (N, L) float32, 1e-17 erg/s/cm2/A
    err: np.ndarray                  # (N, L) float32; <= 0 marks a bad pixel
    model: np.ndarray                # (N, L) float32 noiseless flux
    conv: np.ndarray                 # (L,) electrons per flux unit
    bkgvar: np.ndarray               # (N,) background + dark + read variance, electrons^2
    present: np.ndarray              # (N,) bool, False where the band is missing
    snr: np.ndarray                  # (N,) mean over valid pixels of max(FLUX,0)/ERR
    shift: np.ndarray                # (N,) applied wavelength shift, pixels


@dataclass
class SimulatedSpectra:
    objid: np.ndarray
    population: Population
    bands: dict = field(default_factory=dict)    # band name -> BandSpectra

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


def simulate_spectra(pop: Population, instrument, sedlib, rng: np.random.Generator,
                     options: SimOptions = SimOptions(), objid=None, noise: bool = True,
                     rest_flux=None, amplitude=None) -> SimulatedSpectra:
    """Render ``pop`` through the instrument.

    ``rest_flux`` (N, W) and ``amplitude`` (N,) replace the population's SEDs and their
    magnitude scaling; the evaluation uses them to render bare template vectors.
    """
    n = len(pop)
    objid = np.arange(1, n + 1, dtype=np.int64) if objid is None else np.asarray(objid, np.int64)
    if rest_flux is None:
        rest = np.empty((n, sedlib.wave.size))
        for lib in np.unique(pop.sed_lib):
            sel = pop.sed_lib == lib
            rest[sel] = sedlib.spectra(lib, pop.sed_coeff[sel])
    else:
        rest = np.ascontiguousarray(rest_flux, dtype=float)
    lnw = np.log(sedlib.wave)
    rest_edges = np.exp(np.concatenate([[lnw[0] - (lnw[1] - lnw[0]) / 2],
                                        (lnw[1:] + lnw[:-1]) / 2, [lnw[-1] + (lnw[-1] - lnw[-2]) / 2]]))
    amp = (ab_amplitude(sedlib, rest, pop.z, pop.mag, instrument[MAG_NORM_BAND]) if amplitude is None
           else np.asarray(amplitude, float))
    rows = extraction_rows(instrument, pop)
    p = instrument.p
    u, table = morphology.marginal_table()
    missing = np.full(n, "", dtype="U2")
    if options.missing_band_prob > 0:
        drop = rng.random(n) < options.missing_band_prob
        missing[drop] = rng.choice(np.array(BANDS_USED), drop.sum())
    out = SimulatedSpectra(objid=objid, population=pop)
    for bname in BANDS_USED:
        band = instrument[bname]
        centres, edges = forward.band_grid(band, PAD_PIXELS)
        conv_pad = forward.electrons_per_flux(instrument, band, centres)
        lsf = centres / band.resolution / 2.3548 / band.dispersion
        if p("PSFINR") == 0:
            lsf = np.sqrt(lsf ** 2 + (p("PSF_FWHM") / 2.3548 / p("PIXSCALE")) ** 2)
        scale_pix = morphology.projected_scale(pop.r_eff, pop.axis_ratio, pop.pa) / p("PIXSCALE")
        shift = (rng.uniform(-options.wave_shift_max, options.wave_shift_max, n)
                 if options.wave_shift_max > 0 else np.zeros(n))
        n_out = band.wavelength.size
        electrons = np.empty((n, n_out))
        forward.render_band(rest_edges, rest, pop.z.astype(float), amp.astype(float), shift.astype(float),
                            edges, band.dispersion, conv_pad, lsf, table, morphology.SERSIC_N_GRID,
                            morphology.U_STEP, pop.sersic_n.astype(float), scale_pix.astype(float),
                            MAX_KERNEL_HALF, PAD_PIXELS, n_out, electrons)
        conv = conv_pad[PAD_PIXELS:PAD_PIXELS + n_out]
        background = (band.sky + p("DARK")) * p("T_EXP") * p("N_EXP") * rows
        readvar = p("RDNOISE") ** 2 * p("N_EXP") * rows
        if noise:
            measured, err_e = forward.add_noise(electrons, background[:, None], readvar[:, None], rng)
        else:
            measured = electrons
            err_e = np.sqrt(np.clip(electrons, 0, None) + (background + readvar)[:, None])
        flux = (measured / conv).astype(np.float32)
        err = (err_e / conv).astype(np.float32)
        if options.mask_run_prob > 0:
            hit = np.where(rng.random(n) < options.mask_run_prob)[0]
            for i in hit:
                length = int(rng.integers(1, options.mask_run_max + 1))
                start = int(rng.integers(0, max(1, n_out - length)))
                err[i, start:start + length] = 0.0
        present = missing != bname
        out.bands[bname] = BandSpectra(
            wave=band.wavelength.copy(), flux=flux, err=err, model=(electrons / conv).astype(np.float32),
            conv=conv, bkgvar=background + readvar, present=present,
            snr=np.where(present, band_snr(flux, err), 0.0), shift=shift)
    return out
