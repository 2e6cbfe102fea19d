"""Galaxy light profiles projected onto one detector axis.

In slitless spectroscopy the galaxy is its own slit: its Sersic profile, projected onto
the dispersion axis, broadens every spectral feature; projected onto the
cross-dispersion axis it sets how many rows the 1D extraction sums.

For an elliptically symmetric profile with semi-major scale r_eff and axis ratio q, the
marginal along a direction at angle theta from the major axis is the circular
marginal stretched by s(theta) = r_eff sqrt(cos^2 theta + q^2 sin^2 theta). So one table
of circular marginals m_n(u), u = x / r_eff, tabulated over Sersic n, serves every shape.
"""
from __future__ import annotations

import functools

import numba
import numpy as np

KERNEL_CUT = 1e-4          # kernels end where the profile falls below this fraction of its peak
SERSIC_N_GRID = np.array([0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0])
U_STEP = 0.01
U_MAX = 20.0


def sersic_bn(n):
    """b_n such that r_eff encloses half the light (Ciotti & Bertin 1999 expansion)."""
    n = np.asarray(n, float)
    return 2 * n - 1 / 3 + 4 / (405 * n) + 46 / (25515 * n ** 2) + 131 / (1148175 * n ** 3)


@functools.lru_cache(maxsize=1)
def marginal_table():
    """(len(SERSIC_N_GRID), n_u) circular marginals m_n(u) for u >= 0, each integrating to 1 over all u."""
    u = np.arange(0.0, U_MAX + U_STEP / 2, U_STEP)
    v = np.concatenate([[0.0], np.geomspace(1e-4, 60.0, 1500)])
    table = np.empty((SERSIC_N_GRID.size, u.size))
    for k, n in enumerate(SERSIC_N_GRID):
        r = np.sqrt(u[:, None] ** 2 + v[None, :] ** 2)
        prof = np.exp(-sersic_bn(n) * (r ** (1.0 / n) - 1.0))
        table[k] = 2.0 * np.trapezoid(prof, v, axis=1)
        norm = 2.0 * np.trapezoid(table[k], u)
        table[k] /= norm
    return u, table


def projected_scale(r_eff, axis_ratio, angle_deg):
    """Scale (same unit as r_eff) of the profile projected on an axis at ``angle_deg`` from the major axis."""
    t = np.deg2rad(angle_deg)
    return r_eff * np.sqrt(np.cos(t) ** 2 + (axis_ratio * np.sin(t)) ** 2)


def enclosed_halfwidth(sersic_n, fraction):
    """Half-width u (in units of the projected scale) of the central interval holding ``fraction`` of the marginal."""
    u, table = marginal_table()
    cum = 2.0 * np.concatenate([np.zeros((table.shape[0], 1)),
                                np.cumsum(0.5 * (table[:, 1:] + table[:, :-1]) * U_STEP, axis=1)], axis=1)
    widths = np.array([np.interp(fraction, c, u) for c in cum])
    return np.interp(sersic_n, SERSIC_N_GRID, widths)


@numba.njit(cache=True)
def profile_kernel(table, n_grid, u_step, sersic_n, scale_pix, max_half, out):
    """Pixel-integrated projected Sersic kernel with scale ``scale_pix`` written into ``out``.

    Returns the half-width K actually used; ``out[:2K+1]`` holds the kernel, summing to 1.
    The kernel is cut where the profile falls below 1e-4 of its peak, or at ``max_half``.
    """
    # Linear interpolation between the two bracketing Sersic indices.
    j = 0
    while j < n_grid.size - 2 and n_grid[j + 1] < sersic_n:
        j += 1
    w = (sersic_n - n_grid[j]) / (n_grid[j + 1] - n_grid[j])
    w = min(max(w, 0.0), 1.0)
    n_u = table.shape[1]
    sub = 8
    half = 0
    total = 0.0
    peak = -1.0
    for k in range(max_half + 1):
        acc = 0.0
        for s in range(sub):
            x = abs(k - 0.5 + (s + 0.5) / sub)
            ui = x / max(scale_pix, 1e-6) / u_step
            i0 = int(ui)
            if i0 >= n_u - 1:
                continue
            f = ui - i0
            m0 = (1 - w) * table[j, i0] + w * table[j + 1, i0]
            m1 = (1 - w) * table[j, i0 + 1] + w * table[j + 1, i0 + 1]
            acc += (1 - f) * m0 + f * m1
        acc /= sub
        if k == 0:
            peak = acc
        elif acc < 1e-4 * peak:
            break
        out[max_half + k] = acc
        out[max_half - k] = acc
        half = k
        total += acc if k == 0 else 2 * acc
    # Move the kernel to the start of ``out`` and normalise.
    for k in range(2 * half + 1):
        out[k] = out[max_half - half + k] / total
    return half


@functools.lru_cache(maxsize=1)
def _cumulative_moments():
    """Cumulative zeroth and second moments of each marginal, cut where profile_kernel cuts it."""
    u, table = marginal_table()
    m = np.where(table >= KERNEL_CUT * table[:, :1], table, 0.0)
    step = np.diff(u)[None, :]
    m0 = np.concatenate([np.zeros((m.shape[0], 1)), np.cumsum(0.5 * (m[:, 1:] + m[:, :-1]) * step, axis=1)], axis=1)
    m2u = m * u[None, :] ** 2
    m2 = np.concatenate([np.zeros((m.shape[0], 1)), np.cumsum(0.5 * (m2u[:, 1:] + m2u[:, :-1]) * step, axis=1)], axis=1)
    return u, m0, m2


def marginal_rms(sersic_n, u_max=None):
    """RMS width, in units of the projected scale, of the projected Sersic profile of index n.

    The profile is cut as profile_kernel cuts it: below 1e-4 of its peak, and beyond
    ``u_max`` (max_half / scale in pixels). A Gaussian of sigma = rms x scale then has the
    same second moment as the Sersic kernel the simulator uses: the alternative
    self-broadening kernel of the instrument variations.
    """
    u, m0, m2 = _cumulative_moments()
    n = np.atleast_1d(np.asarray(sersic_n, float))
    um = np.full(n.shape, u[-1]) if u_max is None else np.minimum(np.broadcast_to(u_max, n.shape), u[-1])
    per_grid = np.array([np.sqrt(np.interp(um, u, m2[k]) / np.interp(um, u, m0[k]))
                         for k in range(SERSIC_N_GRID.size)])          # (n_grid, N)
    j = np.clip(np.searchsorted(SERSIC_N_GRID, n) - 1, 0, SERSIC_N_GRID.size - 2)
    w = np.clip((n - SERSIC_N_GRID[j]) / (SERSIC_N_GRID[j + 1] - SERSIC_N_GRID[j]), 0.0, 1.0)
    cols = np.arange(n.size)
    out = (1 - w) * per_grid[j, cols] + w * per_grid[j + 1, cols]
    return out if np.ndim(sersic_n) else float(out[0])
