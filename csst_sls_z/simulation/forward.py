"""The forward model, per band: SED -> electrons in each 1D-spectrum pixel -> noisy spectrum.

Order of operations, following the physics of a slitless exposure:
1. the redshifted rest-frame SED (scaled to its magnitude) is integrated into detector
   pixels, flux-conserving, on the band's pixel grid padded on both sides (light from
   outside the extraction window is dispersed into it by the broadening);
2. F_lambda -> electrons: lambda / (h c) x area x throughput x Angstrom per pixel x exposure
   x aperture fraction;
3. the electrons are convolved with the line-spread function (a Gaussian of FWHM
   lambda / R, varying along the band) and with the galaxy's profile projected on the
   dispersion axis (self-broadening), then cropped to the band;
4. noise: Poisson on source + sky + dark over the extraction rows, Gaussian read noise,
   known background subtracted; the reported error is what an extraction would report;
5. electrons -> flux with the same per-pixel factor (a point-source flux calibration).

All per-object loops are numba kernels; the caller draws the random numbers with a
numpy Generator so a seed fixes the output bytes.
"""
from __future__ import annotations

import numba
import numpy as np

H_C = 6.62607015e-27 * 2.99792458e18     # erg * Angstrom
FLUX_SCALE = 1e-17                        # product flux unit, erg/s/cm2/A


def band_grid(band, pad: int):
    """Pixel centres and edges of ``band``'s 1D spectrum extended by ``pad`` pixels each side."""
    centres = band.wmin + band.dispersion * np.arange(-pad, band.wavelength.size + pad)
    edges = np.concatenate([centres - band.dispersion / 2, [centres[-1] + band.dispersion / 2]])
    return centres, edges


def electrons_per_flux(instrument, band, wave):
    """Electrons collected per 1e-17 erg/s/cm2/A at ``wave`` over the whole co-added exposure."""
    p = instrument.p
    return (FLUX_SCALE * wave / H_C * p("AREA") * band.throughput_at(wave) * band.dispersion
            * p("T_EXP") * p("N_EXP") * p("AP_FRAC"))


@numba.njit(cache=True)
def _bin_flux(src_edges, src_flux, dst_edges, out):
    """Mean of a piecewise-constant F_lambda over each destination pixel (flux conserving)."""
    n_src = src_flux.size
    n_dst = out.size
    i = 0
    for j in range(n_dst):
        lo = dst_edges[j]
        hi = dst_edges[j + 1]
        while i < n_src and src_edges[i + 1] <= lo:
            i += 1
        acc = 0.0
        k = i
        while k < n_src and src_edges[k] < hi:
            a = max(lo, src_edges[k])
            b = min(hi, src_edges[k + 1])
            if b > a:
                acc += src_flux[k] * (b - a)
            k += 1
        out[j] = acc / (hi - lo)


@numba.njit(cache=True)
def _convolve_variable_gauss(x, sigma, scale, add2, out):
    """out[j] = sum_i x[i] G(j - i; s_i): each pixel's light spread by its own LSF width.

    s_i = sqrt((scale * sigma[i])^2 + add2): the nominal LSF rescaled for this object's
    resolution, with the PSF (variance ``add2``, pixels^2) added in quadrature where asked.
    """
    n = x.size
    for j in range(n):
        out[j] = 0.0
    for i in range(n):
        s = np.sqrt((scale * sigma[i]) ** 2 + add2)
        half = int(4.0 * s) + 1
        norm = 0.0
        for d in range(-half, half + 1):
            norm += np.exp(-0.5 * (d / s) ** 2)
        for d in range(-half, half + 1):
            j = i + d
            if 0 <= j < n:
                out[j] += x[i] * np.exp(-0.5 * (d / s) ** 2) / norm


@numba.njit(cache=True)
def _gauss_kernel(sigma, max_half, out):
    """Pixel-integrated Gaussian of ``sigma`` pixels at the start of ``out``; returns its half-width."""
    half = min(max_half, int(4.0 * sigma) + 1)
    total = 0.0
    sub = 8
    for k in range(-half, half + 1):
        acc = 0.0
        for s in range(sub):
            x = k - 0.5 + (s + 0.5) / sub
            acc += np.exp(-0.5 * (x / max(sigma, 1e-6)) ** 2)
        out[k + half] = acc
        total += acc
    for k in range(2 * half + 1):
        out[k] /= total
    return half


@numba.njit(cache=True)
def _convolve_kernel(x, kernel, half, out):
    n = x.size
    for j in range(n):
        acc = 0.0
        for d in range(-half, half + 1):
            i = j - d
            if 0 <= i < n:
                acc += x[i] * kernel[d + half]
        out[j] = acc


@numba.njit(cache=True, parallel=True)
def render_band(rest_edges, rest_flux, z, amplitude, shift_pix, pad_edges, dispersion,
                conv_pad, lsf_sigma_pad, profile_table, n_grid, u_step, sersic_n, scale_pix,
                max_half, pad, n_out, out_electrons, lsf_scale, lsf_add2, disp_scale, ref_wave,
                gauss_sigma):
    """Noiseless electrons of every object in one band.

    rest_flux: (N, W) rest-frame F_lambda; amplitude: (N,) scale to product flux units;
    shift_pix: (N,) wavelength-calibration shift (the light lands shift_pix pixels redward
    of its nominal pixel); scale_pix: (N,) projected profile scale in pixels.
    Per-object instrument variations: lsf_scale (N,) multiplies the nominal LSF sigma
    (R_nominal / R / disp_scale); lsf_add2 (N,) is a variance in pixels^2 added to it;
    disp_scale (N,) is the true / nominal dispersion about ``ref_wave`` (pixel k then sees
    ref + (lambda_k - ref) * disp_scale); gauss_sigma (N,) > 0 replaces the Sersic profile
    by a Gaussian of that sigma in pixels.
    """
    n_obj = rest_flux.shape[0]
    n_pad = pad_edges.size - 1
    for o in numba.prange(n_obj):
        obs_edges = np.empty(rest_edges.size)
        shifted = np.empty(pad_edges.size)
        flam = np.empty(n_pad)
        tmp = np.empty(n_pad)
        tmp2 = np.empty(n_pad)
        kernel = np.empty(2 * max_half + 1)
        for k in range(rest_edges.size):
            obs_edges[k] = rest_edges[k] * (1.0 + z[o])
        for k in range(pad_edges.size):
            shifted[k] = ref_wave + (pad_edges[k] - ref_wave) * disp_scale[o] - shift_pix[o] * dispersion * disp_scale[o]
        _bin_flux(obs_edges, rest_flux[o], shifted, flam)
        # A pixel spanning disp_scale times the nominal Angstroms collects that much more light.
        for k in range(n_pad):
            tmp[k] = flam[k] * amplitude[o] * conv_pad[k] * disp_scale[o]
        _convolve_variable_gauss(tmp, lsf_sigma_pad, lsf_scale[o], lsf_add2[o], tmp2)
        if gauss_sigma[o] > 0:
            half = _gauss_kernel(gauss_sigma[o], max_half, kernel)
            _convolve_kernel(tmp2, kernel, half, tmp)
        elif scale_pix[o] > 0:
            half = profile_kernel_into(profile_table, n_grid, u_step, sersic_n[o], scale_pix[o], max_half, kernel)
            _convolve_kernel(tmp2, kernel, half, tmp)
        else:
            for k in range(n_pad):
                tmp[k] = tmp2[k]
        for k in range(n_out):
            out_electrons[o, k] = tmp[pad + k]


from .morphology import profile_kernel as profile_kernel_into  # noqa: E402  (numba dispatcher)


@numba.njit(cache=True, parallel=True)
def photon_weighted_fnu(rest_wave, rest_flux, z, tp_wave, tp_value):
    """Photon-weighted mean F_nu (in F_lambda units x A / c) of each redshifted SED through a throughput."""
    n_obj = rest_flux.shape[0]
    out = np.empty(n_obj)
    n_w = rest_wave.size
    for o in numba.prange(n_obj):
        num = 0.0
        den = 0.0
        for i in range(1, n_w - 1):
            w = rest_wave[i] * (1.0 + z[o])
            if w <= tp_wave[0] or w >= tp_wave[-1]:
                continue
            j = np.searchsorted(tp_wave, w) - 1
            f = (w - tp_wave[j]) / (tp_wave[j + 1] - tp_wave[j])
            t = (1 - f) * tp_value[j] + f * tp_value[j + 1]
            if t <= 0:
                continue
            dl = 0.5 * (rest_wave[i + 1] - rest_wave[i - 1]) * (1.0 + z[o])
            num += rest_flux[o, i] * t * w * dl
            den += t / w * dl
        out[o] = num / den / 2.99792458e18 if den > 0 else 0.0
    return out


def add_noise(electrons, background, readvar, rng):
    """Poisson(source + background) + N(0, read) - background, and the error an extraction reports.

    electrons: (N, L) noiseless source electrons; background, readvar: (N, 1) or (N, L)
    electrons and electrons^2 summed over the extraction rows and exposures.
    """
    expected = np.clip(electrons, 0.0, None) + background
    counts = rng.poisson(expected).astype(np.float64)
    counts += rng.normal(0.0, 1.0, size=counts.shape) * np.sqrt(readvar)
    measured = counts - background
    err = np.sqrt(np.clip(measured, 0.0, None) + background + readvar)
    return measured, err
