"""Numba preprocessing: raw GV/GI spectra -> the network's (N, L, 2) input.

Per object and band:
1. validity: a pixel is valid when WAVELENGTH, FLUX and ERR are finite, ERR > 0 and the
   pixel lies inside the band's grid; non-finite values or unsorted / repeated
   wavelengths are repaired (masked, sorted) and reported as BAD_INPUT;
2. SNR (mean over valid pixels of max(FLUX, 0) / ERR) and NPIX, on the native pixels;
3. resampling onto the network's fixed grid (stored in the ``wavegrid`` reference file),
   flux-conserving and inverse-variance weighted: each output pixel is the mean of the
   input flux densities weighted by overlap x ivar, with the propagated error; an output
   pixel is valid when valid input covers at least ``min_cover`` (0.5) of it;
4. one robust scale per object, the median error of its valid output pixels over both
   bands, divides flux and error; pixels whose error exceeds ``max_rel_err`` (20) times
   that scale (the band ends, where the throughput falls to nothing) carry under 1/400 of
   a typical pixel's information and are masked, so their huge values cannot swamp the
   network's first layers.

``min_cover`` and ``max_rel_err`` change results, so they belong to the network's input
convention: they are recorded in the ``wavegrid`` reference file with the grid (keywords
MINCOVER and MAXRELER) and travel on ``WaveGrid``. Files written before they were
recorded load with the values below, the ones those sets were made with.

The input convention the network was trained with: channel 0 = flux / scale,
channel 1 = error / scale, and **masked pixels are 0 in both channels**.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np


@dataclass(frozen=True)
class WaveGrid:
    """The network's input grid (GV pixels then GI pixels) and its input convention's numbers.

    The defaults of ``min_cover`` and ``max_rel_err`` are the values of every wavegrid file
    of schema version 1 that does not record them (sets up to 0004).
    """
    starts: tuple
    steps: tuple
    sizes: tuple
    bands: tuple = ("GV", "GI")
    min_cover: float = 0.5       # an output pixel needs valid input over this fraction of its width
    max_rel_err: float = 20.0    # pixels noisier than this many times the object's median error are masked

    @property
    def length(self) -> int:
        return int(sum(self.sizes))

    def centres(self, band: str) -> np.ndarray:
        k = self.bands.index(band)
        return self.starts[k] + self.steps[k] * np.arange(self.sizes[k])

    def edges(self, band: str) -> np.ndarray:
        c = self.centres(band)
        k = self.bands.index(band)
        return np.concatenate([c - self.steps[k] / 2, [c[-1] + self.steps[k] / 2]])

    def offset(self, band: str) -> int:
        return int(sum(self.sizes[: self.bands.index(band)]))

    @property
    def wavelength(self) -> np.ndarray:
        return np.concatenate([self.centres(b) for b in self.bands])

    def coarsened(self, factor: int) -> "WaveGrid":
        """The grid whose pixels join ``factor`` neighbouring pixels of this one, band by band
        (a band's last ``size % factor`` pixels dropped): its edges are edges of this grid, so
        resampling onto it is what ``rebin_gridded`` does to spectra already on this grid."""
        factor = int(factor)
        if factor < 1:
            raise ValueError(f"a grid is coarsened by a whole factor of at least 1, not {factor}")
        if factor == 1:
            return self
        return WaveGrid(starts=tuple(float(s + 0.5 * (factor - 1) * d) for s, d in zip(self.starts, self.steps)),
                        steps=tuple(float(d * factor) for d in self.steps),
                        sizes=tuple(int(n // factor) for n in self.sizes), bands=self.bands,
                        min_cover=self.min_cover, max_rel_err=self.max_rel_err)


@numba.njit(cache=True)
def _resample_one(wave, flux, err, dst_edges, min_cover, out_flux, out_err, out_ok):
    """Resample one object's band; returns (n_valid_native, snr, repaired)."""
    n = wave.size
    repaired = False
    order = np.arange(n)
    for i in range(1, n):
        if not wave[i] > wave[i - 1]:
            repaired = True
            break
    if repaired:
        order = np.argsort(wave, kind="mergesort")
    w = np.empty(n)
    f = np.empty(n)
    e = np.empty(n)
    ok = np.zeros(n, dtype=np.bool_)
    for k in range(n):
        i = order[k]
        w[k] = wave[i]
        f[k] = flux[i]
        e[k] = err[i]
    lo_band = dst_edges[0]
    hi_band = dst_edges[-1]
    n_valid = 0
    snr_sum = 0.0
    last_w = -np.inf                     # wavelength of the last valid pixel kept
    for k in range(n):
        finite = np.isfinite(w[k]) and np.isfinite(f[k]) and np.isfinite(e[k])
        if not finite:
            if not (np.isfinite(e[k]) and e[k] <= 0):
                repaired = True          # NaN/inf that is not an ordinary bad-pixel marker
        ok[k] = finite and e[k] > 0 and lo_band <= w[k] <= hi_band
        if ok[k] and w[k] == last_w:
            ok[k] = False                # repeated wavelength: keep the first valid pixel only
            repaired = True
        if ok[k]:
            last_w = w[k]
            n_valid += 1
            snr_sum += max(f[k], 0.0) / e[k]
    snr = snr_sum / n_valid if n_valid > 0 else 0.0
    # Native pixel edges: midpoints between valid neighbours' wavelengths.
    idx = np.empty(n_valid, dtype=np.int64)
    m = 0
    e_min = np.inf
    for k in range(n):
        if ok[k]:
            idx[m] = k
            m += 1
            e_min = min(e_min, e[k])
    n_dst = out_flux.size
    num = np.zeros(n_dst)
    den = np.zeros(n_dst)
    var_num = np.zeros(n_dst)
    cover = np.zeros(n_dst)
    for t in range(n_valid):
        k = idx[t]
        # Pixel edges at midpoints to the neighbouring samples (valid or not), so gaps stay gaps.
        has_left = k > 0 and np.isfinite(w[k - 1]) and w[k - 1] < w[k]
        has_right = k + 1 < n and np.isfinite(w[k + 1]) and w[k + 1] > w[k]
        if not has_left and not has_right:
            continue
        left = 0.5 * (w[k - 1] + w[k]) if has_left else 0.0
        right = 0.5 * (w[k] + w[k + 1]) if has_right else 0.0
        if not has_left:
            left = w[k] - (right - w[k])
        if not has_right:
            right = w[k] + (w[k] - left)
        if right <= left:
            continue
        # Inverse variance relative to the smallest error: (e_min / e)^2 lies in [0, 1] whatever the
        # flux scale (1/e^2 itself overflows for e < 1e-154); the common factor cancels in the mean.
        ivar = (e_min / e[k]) * (e_min / e[k])
        # Output pixels overlapping [left, right].
        j = np.searchsorted(dst_edges, left) - 1
        if j < 0:
            j = 0
        while j < n_dst and dst_edges[j] < right:
            a = max(left, dst_edges[j])
            b = min(right, dst_edges[j + 1])
            if b > a:
                o = b - a
                num[j] += o * ivar * f[k]
                den[j] += o * ivar
                var_num[j] += o * o * ivar
                cover[j] += o
            j += 1
    for j in range(n_dst):
        width = dst_edges[j + 1] - dst_edges[j]
        if den[j] > 0 and cover[j] >= min_cover * width:
            out_flux[j] = num[j] / den[j]
            out_err[j] = np.sqrt(var_num[j]) / den[j] * e_min
            out_ok[j] = True
        else:
            out_flux[j] = 0.0
            out_err[j] = 0.0
            out_ok[j] = False
    return n_valid, snr, repaired


@numba.njit(cache=True, parallel=True)
def _resample_band(wave, flux, err, offsets, present, dst_edges, min_cover, out_flux, out_err, out_ok,
                   npix, snr, repaired):
    n_obj = offsets.size - 1
    for o in numba.prange(n_obj):
        a = offsets[o]
        b = offsets[o + 1]
        if not present[o] or b <= a:
            for j in range(out_flux.shape[1]):
                out_flux[o, j] = 0.0
                out_err[o, j] = 0.0
                out_ok[o, j] = False
            npix[o] = 0
            snr[o] = 0.0
            repaired[o] = False
            continue
        nv, s, r = _resample_one(wave[a:b], flux[a:b], err[a:b], dst_edges, min_cover,
                                 out_flux[o], out_err[o], out_ok[o])
        npix[o] = nv
        snr[o] = s
        repaired[o] = r


def rebin_gridded(flux, err, sizes, factor: int, min_cover: float = WaveGrid.min_cover):
    """Spectra on a grid (bands of ``sizes`` pixels, side by side) -> the grid coarsened by
    ``factor`` (``WaveGrid.coarsened``): each coarse pixel the inverse-variance weighted mean of
    the valid pixels it joins, with the propagated error, valid when they cover at least
    ``min_cover`` of it; as ``preprocess_bands`` resamples native pixels onto the coarse grid.

    A pixel is valid when its error is finite and > 0 and its flux finite. Returns
    ``(flux, err)`` with invalid coarse pixels 0 in both.
    """
    flux = np.ascontiguousarray(flux, dtype=np.float64)
    err = np.ascontiguousarray(err, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.int64)
    out_len = int(np.sum(sizes // factor))
    out_flux = np.zeros((flux.shape[0], out_len))
    out_err = np.zeros((flux.shape[0], out_len))
    _rebin_gridded(flux, err, sizes, int(factor), float(min_cover), out_flux, out_err)
    return out_flux, out_err


@numba.njit(cache=True, nogil=True)
def _rebin_gridded(flux, err, sizes, factor, min_cover, out_flux, out_err):
    n = flux.shape[0]
    need = min_cover * factor
    for o in range(n):
        src = 0
        dst = 0
        for b in range(sizes.size):
            m = sizes[b] // factor
            for j in range(m):
                num = 0.0
                den = 0.0
                cnt = 0
                e_min = np.inf
                for k in range(src + j * factor, src + (j + 1) * factor):
                    e = err[o, k]
                    if np.isfinite(e) and e > 0 and np.isfinite(flux[o, k]):
                        e_min = min(e_min, e)
                # Weights relative to the smallest error, as in _resample_one (no overflow).
                for k in range(src + j * factor, src + (j + 1) * factor):
                    e = err[o, k]
                    if np.isfinite(e) and e > 0 and np.isfinite(flux[o, k]):
                        w = (e_min / e) * (e_min / e)
                        num += w * flux[o, k]
                        den += w
                        cnt += 1
                if cnt > 0 and cnt >= need:
                    out_flux[o, dst + j] = num / den
                    out_err[o, dst + j] = e_min / np.sqrt(den)
                else:
                    out_flux[o, dst + j] = 0.0
                    out_err[o, dst + j] = 0.0
            src += sizes[b]
            dst += m


def normalise(flux, err, ok, out, max_rel_err: float = WaveGrid.max_rel_err):
    """Divide each object's flux and error by the median error of its valid pixels; masked -> 0.

    flux, err: (N, L) float; ok: (N, L) bool; out: (N, L, 2) float32. Returns the scales.
    Pixels with an error above ``max_rel_err`` times the scale are masked (the wavegrid's
    value; the default is that of every set the training has made so far).
    """
    return _normalise(flux, err, ok, out, float(max_rel_err))


@numba.njit(cache=True, nogil=True)
def _normalise(flux, err, ok, out, max_rel_err):
    n, length = flux.shape
    scales = np.zeros(n)
    # Serial on purpose: ~4 ms per 256 spectra, while numba's thread pool costs more than
    # it saves when training runs beside it.
    for o in range(n):
        cnt = 0
        for j in range(length):
            if ok[o, j]:
                cnt += 1
        buf = np.empty(cnt)
        m = 0
        for j in range(length):
            if ok[o, j]:
                buf[m] = err[o, j]
                m += 1
        scale = np.median(buf) if cnt > 0 else 1.0
        if not (scale > 0 and np.isfinite(scale)):
            scale = 1.0
        scales[o] = scale
        for j in range(length):
            if ok[o, j] and err[o, j] <= max_rel_err * scale:
                out[o, j, 0] = flux[o, j] / scale
                out[o, j, 1] = err[o, j] / scale
            else:
                out[o, j, 0] = 0.0
                out[o, j, 1] = 0.0
    return scales


@dataclass
class Preprocessed:
    x: np.ndarray            # (N, L, 2) float32 network input
    valid: np.ndarray        # (N, L) bool
    snr: dict                # band -> (N,) float32
    npix: dict               # band -> (N,) int32
    repaired: np.ndarray     # (N,) bool: BAD_INPUT
    coverage: np.ndarray     # (N,) fraction of the grid with valid data


def preprocess_bands(bands: dict, grid: WaveGrid, n: int) -> Preprocessed:
    """bands: band -> BandData-like (wave, flux, err, offsets, present) CSR arrays."""
    length = grid.length
    flux = np.zeros((n, length))
    err = np.zeros((n, length))
    ok = np.zeros((n, length), dtype=np.bool_)
    snr, npix = {}, {}
    repaired = np.zeros(n, dtype=np.bool_)
    for band in grid.bands:
        lo = grid.offset(band)
        hi = lo + grid.sizes[grid.bands.index(band)]
        b_npix = np.zeros(n, dtype=np.int64)
        b_snr = np.zeros(n)
        b_rep = np.zeros(n, dtype=np.bool_)
        data = bands.get(band)
        if data is not None:
            f_out = np.zeros((n, hi - lo))
            e_out = np.zeros((n, hi - lo))
            ok_out = np.zeros((n, hi - lo), dtype=np.bool_)
            _resample_band(np.ascontiguousarray(data.wave, dtype=np.float64),
                           np.ascontiguousarray(data.flux, dtype=np.float64),
                           np.ascontiguousarray(data.err, dtype=np.float64),
                           np.asarray(data.offsets, dtype=np.int64), np.asarray(data.present, dtype=np.bool_),
                           grid.edges(band), float(grid.min_cover), f_out, e_out, ok_out, b_npix, b_snr, b_rep)
            flux[:, lo:hi] = f_out
            err[:, lo:hi] = e_out
            ok[:, lo:hi] = ok_out
        snr[band] = b_snr.astype(np.float32)
        npix[band] = b_npix.astype(np.int32)
        repaired |= b_rep
    x = np.zeros((n, length, 2), dtype=np.float32)
    normalise(flux, err, ok, x, grid.max_rel_err)
    # The network gets finite numbers only: a pixel whose normalised value overflows (absurd
    # flux / error ratios) is masked like any bad pixel, and its object reported as repaired.
    unusable = ~np.isfinite(x).all(axis=2)
    if unusable.any():
        x[unusable] = 0.0
        ok &= ~unusable
        repaired |= unusable.any(axis=1)
    return Preprocessed(x=x, valid=ok, snr=snr, npix=npix, repaired=repaired,
                        coverage=ok.mean(axis=1) if length else np.zeros(n))


def preprocess_gridded(flux: np.ndarray, err: np.ndarray, max_rel_err: float = WaveGrid.max_rel_err) -> np.ndarray:
    """The same normalisation for spectra already on the network grid (training, simulation)."""
    ok = (err > 0) & np.isfinite(err) & np.isfinite(flux)
    x = np.empty(flux.shape + (2,), dtype=np.float32)
    normalise(np.asarray(flux, np.float64), np.asarray(err, np.float64), ok, x, max_rel_err)
    return x
