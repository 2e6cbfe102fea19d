"""Training data in memory: noiseless spectra plus their noise terms, fresh noise each draw.

Each training object keeps its noiseless model spectrum on the network grid with the
instrument's noise terms (electrons per flux unit per pixel, background and read-noise
variance per object), so every batch draws new Poisson + read noise exactly as the
simulator does: the physical version of the paper's Gaussian realisations. The paper's
own noise-on-noise draw, N(flux, err) around one noisy realisation, is available as
``noise="gaussian_realisation"``.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np

from ..datamodel import BANDS_USED
from ..preprocess import normalise, rebin_gridded

log = logging.getLogger(__name__)

NOISE_MODES = ("instrument", "gaussian_realisation")


@dataclass
class TrainingSet:
    z: np.ndarray              # (N,)
    model: np.ndarray          # (N, L) float32 noiseless flux on the grid (GV then GI)
    conv: np.ndarray           # (L,) electrons per flux unit
    background: np.ndarray     # (N, 2) electrons per pixel: GV, GI
    readvar: np.ndarray        # (N, 2) electrons^2 per pixel: GV, GI
    band_slices: tuple         # (slice GV, slice GI)
    noisy_flux: np.ndarray | None = None     # one fixed realisation (for gaussian_realisation)
    noisy_err: np.ndarray | None = None
    snr_gi: np.ndarray | None = None
    err_scale: np.ndarray | None = None      # (N,) reported ERR / true sigma (instrument variation)
    flux_tilt: np.ndarray | None = None      # (N,) flux-calibration tilt at the red end (instrument variation)
    tilt_shape: np.ndarray | None = None     # (L,) tilt per unit flux_tilt on the grid

    def __len__(self):
        return self.z.size

    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.z).tobytes())
        step = max(1, len(self) // 1000)
        h.update(np.ascontiguousarray(self.model[::step]).tobytes())
        for extra in (self.background, self.err_scale, self.flux_tilt):
            if extra is not None:
                h.update(np.ascontiguousarray(extra[::step]).tobytes())
        return h.hexdigest()


def from_simulation(sim, instrument=None) -> TrainingSet:
    """Gather a SimulatedSpectra into one grid (GV then GI) with its noise terms.

    The stored model is the flux before the flux-calibration tilt: the photon noise is
    drawn on the electrons the detector saw, and the tilt then scales flux and error alike,
    as in the simulator.
    """
    gv, gi = sim.bands["GV"], sim.bands["GI"]
    n_gv = gv.wave.size
    n = len(sim)
    flux_tilt = np.asarray(sim.variations.get("flux_tilt", np.zeros(n)), np.float32)
    shape = np.concatenate([np.zeros(b.wave.size) if b.tilt_shape is None else b.tilt_shape for b in (gv, gi)])
    model = np.concatenate([gv.model, gi.model], axis=1)
    if np.any(flux_tilt != 0):
        model = (model / (1.0 + flux_tilt[:, None].astype(np.float64) * shape[None, :])).astype(np.float32)
    return TrainingSet(
        z=sim.population.z.astype(np.float32),
        model=model,
        conv=np.concatenate([gv.conv, gi.conv]).astype(np.float64),
        background=np.stack([sim.bands[b].background for b in BANDS_USED], axis=1),
        readvar=np.stack([sim.bands[b].readvar for b in BANDS_USED], axis=1),
        band_slices=(slice(0, n_gv), slice(n_gv, n_gv + gi.wave.size)),
        noisy_flux=np.concatenate([gv.flux, gi.flux], axis=1),
        noisy_err=np.concatenate([gv.err, gi.err], axis=1),
        snr_gi=gi.snr.astype(np.float32),
        err_scale=np.asarray(sim.variations.get("err_scale", np.ones(n)), np.float32),
        flux_tilt=flux_tilt, tilt_shape=shape)


class BatchMaker:
    """Noisy, normalised batches (x, z) from a TrainingSet."""

    def __init__(self, data: TrainingSet, seed: int, noise: str = "instrument",
                 mask_run_prob: float = 0.1, missing_band_prob: float = 0.03, mask_run_max: int = 40,
                 exact_poisson: bool = False, grid_rebin: int = 1):
        if noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {NOISE_MODES}")
        self.data = data
        self.rng = np.random.default_rng(seed)
        self.noise = noise
        self.mask_run_prob = mask_run_prob
        self.missing_band_prob = missing_band_prob
        self.mask_run_max = mask_run_max
        self.exact_poisson = exact_poisson
        # The network's grid joins this many pixels of the set's grid (RegenConfig.grid_rebin):
        # the noisy spectra are rebinned after the noise, as the stage resamples measured pixels.
        self.grid_rebin = int(grid_rebin)

    def noisy(self, idx):
        d = self.data
        if self.noise == "gaussian_realisation":
            flux = d.noisy_flux[idx].astype(np.float64)
            err = d.noisy_err[idx].astype(np.float64)
            return flux + self.rng.normal(size=flux.shape) * np.where(err > 0, err, 0.0), err
        model_e = d.model[idx].astype(np.float64) * d.conv[None, :]
        bkg = np.empty_like(model_e)
        rdv = np.empty_like(model_e)
        for k, sl in enumerate(d.band_slices):
            bkg[:, sl] = d.background[idx, k][:, None]
            rdv[:, sl] = d.readvar[idx, k][:, None]
        expected = np.clip(model_e, 0, None) + bkg
        if self.exact_poisson:
            counts = self.rng.poisson(expected).astype(np.float64)
            counts += self.rng.normal(size=counts.shape) * np.sqrt(rdv)
            measured = counts - bkg
        else:
            # Poisson(source + sky + dark) + read noise as one Gaussian of the same variance:
            # exact to <1% at the >1000 background electrons of every extraction, and ~10x
            # cheaper, which keeps the batch thread from starving the training step.
            measured = model_e + self.rng.standard_normal(size=model_e.shape) * np.sqrt(expected + rdv)
        err_e = np.sqrt(np.clip(measured, 0, None) + bkg + rdv)
        flux, err = measured / d.conv[None, :], err_e / d.conv[None, :]
        if d.flux_tilt is not None and d.tilt_shape is not None:
            # The calibration tilt scales flux and error alike, after the noise.
            factor = 1.0 + d.flux_tilt[idx, None].astype(np.float64) * d.tilt_shape[None, :]
            flux, err = flux * factor, err * factor
        if d.err_scale is not None:
            err = err * d.err_scale[idx, None]          # the reported error's misestimate
        return flux, err

    def degrade(self, err):
        """Masked runs and missing bands, so the network has seen what the stage will see."""
        n, length = err.shape
        for i in np.where(self.rng.random(n) < self.mask_run_prob)[0]:
            run = int(self.rng.integers(1, self.mask_run_max + 1))
            start = int(self.rng.integers(0, length - run))
            err[i, start:start + run] = 0.0
        for i in np.where(self.rng.random(n) < self.missing_band_prob)[0]:
            err[i, self.data.band_slices[int(self.rng.integers(0, 2))]] = 0.0
        return err

    def network_input(self, flux, err):
        """``(x, ok)``: noisy spectra on the set's grid -> the network's normalised input on its
        grid (rebinned by ``grid_rebin``) and that grid's valid pixels."""
        if self.grid_rebin > 1:
            sizes = [sl.stop - sl.start for sl in self.data.band_slices]
            flux, err = rebin_gridded(flux, err, sizes, self.grid_rebin)
        ok = (err > 0) & np.isfinite(err) & np.isfinite(flux)
        x = np.empty(flux.shape + (2,), dtype=np.float32)
        normalise(flux, err, ok, x)
        return x, ok

    def batch(self, idx, augment: bool = True):
        flux, err = self.noisy(idx)
        if augment:
            err = self.degrade(err)
        return self.network_input(flux, err)[0], self.data.z[idx]

    def fixed(self, augment: bool = False):
        """One fixed noisy realisation of the whole set (validation / test)."""
        return self.batch(np.arange(len(self.data)), augment=augment)

    def stream(self, batch_size: int):
        while True:
            idx = self.rng.integers(0, len(self.data), batch_size)
            yield self.batch(idx)
