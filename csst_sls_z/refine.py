"""Template refinement after the network: a chi-square fit in narrow windows around its p(z) peaks.

The network's p(z) finds the right neighbourhood; it does not find the best redshift inside it.
This step fits a generic rest-frame template basis to each object's native pixels, only inside
narrow windows around the network's Z and the main peaks of its p(z), and multiplies the fit's
likelihood by the network's p(z) (the measured experiment: /work/shared/design/refinement.md,
"the method that worked"). Every number that changes a result lives in the ``refinement``
reference file (:class:`RefinementModel`; ``reffiles/refinement.py`` reads and writes it).

Per object (s = ln(1 + z) throughout):

* pixels: the native pixels of both bands (WAVELENGTH, FLUX, ERR) that are finite with ERR > 0
  and ERR < ``max_rel_err`` x the median ERR of those pixels (the network's MAXRELER rule);
* model: a linear combination of the ``basis`` vectors (rest frame, uniform in ln lambda),
  each broadened per band by a Gaussian of constant width in ln lambda (at the band centre):
  FWHM^2 = (lambda/R)^2 + (W x dispersion)^2 + the pixel boxcar (dispersion^2 / 12 as a variance),
  less the basis's own FWHM = lambda/``basis_r``; W (a self-broadening FWHM in pixels) is one of
  ``widths``. Redshifting is a shift in ln lambda and a linear interpolation of the broadened
  basis, pre-computed once per band and width (:attr:`RefinementModel.templates`);
* amplitudes: linear least squares at every trial z (normal equations accumulated in one pass over
  the pixels, a ``ridge`` x max(diag) ridge, Cholesky); chi2(z) is profiled over the amplitudes;
* windows: +-``window_half`` around the network's Z and around up to ``n_peaks`` peaks of its
  p(z) (:func:`find_peaks`), merged where they overlap and clipped to the p(z) grid's range and
  to where the basis covers every pixel;
* objective: chi2(s) - 2 ``prior_weight`` ln PZ(s), PZ the network's density in s, linearly
  interpolated between bin centres and floored at ``pz_floor`` x its maximum;
* scan: every window on a coarse grid (step <= ``coarse_step``, both window edges included) with
  the width ``widths[coarse_width]`` on pixels binned by ``coarse_bin`` (their chi2 shifted by
  the within-bin scatter, a constant while the model is smooth over a bin); ``coarse_width = -1``:
  every width at every coarse z. Then the ``n_minima`` best local minima of the coarse objective
  more than 2 ``fine_half`` apart, and within ``minimum_margin`` of the best, are re-examined on the
  native pixels: the width is profiled at the first ``profile_minima`` of them (chi2 at that z for
  every width; the others keep the coarse width), then a fine scan with that width, step
  ``fine_step`` over +-``fine_half`` (walking on by up to ``fine_half`` while the minimum sits at
  the scan's end), then up to ``parabola_steps`` vertices of the parabola through the lowest point
  and its neighbours (successive parabolic interpolation). The refined Z is the lowest point
  evaluated.

  The note's measured method is ``coarse_width=-1, coarse_step=1e-3, coarse_bin=1, fine_step=1e-4,
  fine_half=4e-3, parabola_steps=1, minimum_margin=1e30, profile_rounds=1``; the defaults cost about
  a tenth of it (33 chi2 evaluations an object against 351) with the same sigma_NMAD and eta on the
  project's simulator (``studies/refine_accuracy.py`` measures each simplification).

Status: 0 ok; 1 not run (too few usable pixels, no p(z), Z not finite, or no window where the
basis covers the pixels): Z is NaN; 2 the minimum lies on a window edge (the fine minimum is the
last fine point inside the window): Z is that edge point, a solution the windows cut off.

The posterior (:class:`Posterior`, for intervals): the network's p(z) mass outside the windows,
plus, inside each merged window, the network's mass in that window redistributed by the shape
exp(-(objective - min) / (2 T)) over the scanned points (the coarse points, replaced by the fine
ones where a fine scan ran; the objective linear between points). :func:`intervals` turns it
into central intervals for any temperature T without rescanning, so a calibration can fit T
(``training/refine_calibration.py``).

Nothing here imports TensorFlow.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numba
import numpy as np

from .pz import PzGrid, normalise_rows

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
BANDS = ("GV", "GI")

STATUS_OK = 0
STATUS_NOT_RUN = 1
STATUS_WINDOW_EDGE = 2
STATUS_MEANINGS = {STATUS_OK: "ok", STATUS_NOT_RUN: "not run (no usable pixels, no p(z) or Z not finite)",
                   STATUS_WINDOW_EDGE: "minimum on a window edge"}


# ----------------------------------------------------------------------------- the model
@dataclass(frozen=True, eq=False)
class RefinementModel:
    """Every number of the refinement (the ``refinement`` reference file holds them all).

    ``basis``: (n_vec, n_grid) rest-frame vectors sampled at ln(lambda / Angstrom) = ``loglam``
    (n_grid,), a uniform grid (``loglam0``, ``dloglam``), orthonormal (rows), already at resolution
    FWHM = lambda/``basis_r`` (0: unresolved). ``libraries``: where the vectors came from (names only, for the header).
    Per band (``bands`` = GV, GI): ``resolution`` R, ``dispersion`` (Angstrom/pixel), ``centre``
    (Angstrom, where the broadening's constant ln-lambda width is evaluated).
    """
    basis: np.ndarray = field(repr=False)
    loglam: np.ndarray = field(repr=False)
    libraries: tuple = ("REDROCK2016", "KCORRECT")
    basis_r: float = 1000.0
    bands: tuple = BANDS
    resolution: tuple = (250.0, 250.0)
    dispersion: tuple = (7.1, 8.5)
    centre: tuple = (5200.0, 8300.0)
    widths: tuple = (0.0, 4.0, 8.0, 13.0, 20.0)   # self-broadening FWHM trials, pixels
    coarse_width: int = 2          # index into widths used on the coarse scan; -1: all widths at every z
    window_half: float = 0.01      # +- in ln(1+z) around Z and each p(z) peak
    coarse_step: float = 2e-3      # in ln(1+z)
    coarse_bin: int = 2            # the coarse scan bins this many adjacent pixels into one
    fine_step: float = 5e-4
    fine_half: float = 1e-3
    parabola_steps: int = 2        # vertices of successive parabolas evaluated after the fine scan
    n_minima: int = 2              # coarse minima re-examined (local minima > 2 fine_half apart, best first)
    minimum_margin: float = 25.0   # ... only those whose coarse objective is within this of the best one
    profile_minima: int = 1        # the widths are profiled at this many of them (the others keep coarse_width)
    profile_rounds: int = 2        # ... at the coarse minimum, then at the fine minimum (rescanned if it changes)...
    # objective = chi2 - 2 * prior_weight * ln PZ. 2, not 1: on 3,000-object family sets it kept the
    # refinement's eta closer to the network's below GI SNR 3 at the same sigma (docs/refinement.md).
    prior_weight: float = 2.0
    pz_floor: float = 1e-6         # PZ floored at this fraction of its maximum
    peak_smooth: int = 3           # PZ smoothed over this many bins to find peaks
    peak_mass_half: int = 5        # a peak's probability: PZ summed over +- this many bins
    peak_min_prob: float = 0.02    # a peak is kept when its probability is >= this
    peak_min_sep: int = 8          # and it is more than this many bins from a kept one
    n_peaks: int = 3               # peaks kept (besides Z)
    max_rel_err: float = 20.0      # pixels with ERR >= this x the median ERR are not used
    ridge: float = 1e-8            # relative ridge on the normal equations
    temperature: float = 1.0       # posterior temperature (calibrated on a validation set)
    # The temperature by GI SNR: the edges (increasing) and one temperature per bin (one more than
    # edges); empty: ``temperature`` for every object (files written before the bins existed).
    temperature_snr_edges: tuple = ()
    temperatures_by_snr: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "basis", np.ascontiguousarray(self.basis, dtype=np.float64))
        object.__setattr__(self, "loglam", np.ascontiguousarray(self.loglam, dtype=np.float64))
        for name in ("libraries", "bands", "resolution", "dispersion", "centre", "widths",
                     "temperature_snr_edges", "temperatures_by_snr"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        problem = self.problem()
        if problem:
            raise ValueError(f"invalid refinement model: {problem}")

    def problem(self) -> str:
        """'' when the numbers are usable, else what is wrong (one clause)."""
        b = self.basis
        if b.ndim != 2 or b.shape[0] < 1 or b.shape[1] < 2:
            return f"the basis must be (n_vectors >= 1, n_grid >= 2), not {b.shape}"
        if not np.all(np.isfinite(b)):
            return "the basis holds non-finite values"
        g = self.loglam
        if g.shape != (b.shape[1],) or not np.all(np.isfinite(g)):
            return f"the rest grid must be {b.shape[1]} finite ln(lambda) values, one per basis column"
        if not self.dloglam > 0 or np.max(np.abs(g - self.rest_loglam())) > 1e-6 * self.dloglam:
            return "the rest grid must be increasing and uniform in ln(lambda)"
        if self.bands != BANDS:
            return f"the bands must be {BANDS}, not {self.bands}"
        for name in ("resolution", "dispersion", "centre"):
            v = getattr(self, name)
            if len(v) != len(BANDS) or not all(math.isfinite(x) and x > 0 for x in v):
                return f"{name} must be {len(BANDS)} positive numbers, not {v}"
        if not (math.isfinite(self.basis_r) and self.basis_r >= 0):
            return f"basis_r must be >= 0, not {self.basis_r}"
        if not self.widths or not all(math.isfinite(w) and w >= 0 for w in self.widths):
            return f"widths must be one or more numbers >= 0, not {self.widths}"
        if not -1 <= self.coarse_width < len(self.widths):
            return f"coarse_width must be -1 or an index into the {len(self.widths)} widths, not {self.coarse_width}"
        for name in ("window_half", "coarse_step", "fine_step", "fine_half", "max_rel_err", "temperature"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                return f"{name} must be a positive number, not {v}"
        edges, temps = self.temperature_snr_edges, self.temperatures_by_snr
        if edges or temps:
            if len(temps) != len(edges) + 1:
                return (f"temperatures_by_snr must hold one more value than temperature_snr_edges "
                        f"({len(temps)} and {len(edges)})")
            if not all(math.isfinite(e) for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
                return f"temperature_snr_edges must be finite and increasing, not {edges}"
            if not all(math.isfinite(v) and v > 0 for v in temps):
                return f"temperatures_by_snr must be positive numbers, not {temps}"
        if self.fine_half < self.fine_step:
            return f"fine_half ({self.fine_half}) must be at least fine_step ({self.fine_step})"
        for name in ("prior_weight", "ridge", "peak_min_prob", "minimum_margin"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                return f"{name} must be a number >= 0, not {v}"
        if isinstance(self.peak_smooth, (int, np.integer)) and self.peak_smooth % 2 == 0:
            return f"peak_smooth must be odd (a centred running mean), not {self.peak_smooth}"
        if not (math.isfinite(self.pz_floor) and 0 < self.pz_floor < 1):
            return f"pz_floor must lie in (0, 1), not {self.pz_floor}"
        for name, lo in (("n_minima", 1), ("profile_minima", 0), ("coarse_bin", 1), ("parabola_steps", 0),
                         ("profile_rounds", 1),
                         ("peak_smooth", 1), ("peak_mass_half", 0), ("peak_min_sep", 0), ("n_peaks", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < lo:
                return f"{name} must be an integer >= {lo}, not {v}"
        return ""

    @property
    def n_vectors(self) -> int:
        return self.basis.shape[0]

    @property
    def n_grid(self) -> int:
        return self.basis.shape[1]

    @property
    def loglam0(self) -> float:
        return float(self.loglam[0])

    @property
    def dloglam(self) -> float:
        return float((self.loglam[-1] - self.loglam[0]) / (self.loglam.size - 1))

    def rest_loglam(self) -> np.ndarray:
        """The grid as the kernels use it: loglam0 + k dloglam."""
        return self.loglam0 + self.dloglam * np.arange(self.n_grid)

    def sigma_loglam(self, band: int, width: float) -> float:
        """Gaussian sigma, in ln(lambda), that broadens the basis for ``band`` (index) and width W (pixels)."""
        lam, disp, r = self.centre[band], self.dispersion[band], self.resolution[band]
        var = (lam / r / FWHM_PER_SIGMA) ** 2 + (width * disp / FWHM_PER_SIGMA) ** 2 + disp ** 2 / 12.0
        var_ln = var / lam ** 2
        if self.basis_r > 0:
            var_ln -= (1.0 / self.basis_r / FWHM_PER_SIGMA) ** 2
        return math.sqrt(max(var_ln, 0.0))

    @cached_property
    def templates(self) -> np.ndarray:
        """(n_bands, n_widths, n_grid, n_vec) the basis broadened for each band and width (float64)."""
        from scipy.ndimage import gaussian_filter1d
        out = np.empty((len(self.bands), len(self.widths), self.n_grid, self.n_vectors))
        for b in range(len(self.bands)):
            for w, width in enumerate(self.widths):
                sigma = self.sigma_loglam(b, width) / self.dloglam
                out[b, w] = (gaussian_filter1d(self.basis, sigma, axis=1, mode="nearest", truncate=5.0).T
                             if sigma > 0 else self.basis.T)
        return out

    @property
    def max_windows(self) -> int:
        return int(self.n_peaks) + 1

    @property
    def fine_points(self) -> int:
        """Half-width of a fine scan, in fine steps."""
        return max(1, int(round(self.fine_half / self.fine_step)))

    @property
    def max_points(self) -> int:
        """Scanned points one object can store: every coarse point plus every fine scan with its walk."""
        coarse = self.max_windows * (int(math.ceil(2 * self.window_half / self.coarse_step - 1e-9)) + 2)
        fine = int(self.n_minima) * (3 * self.fine_points + 2 + int(self.parabola_steps))
        return coarse + fine

    def replace(self, **changes) -> "RefinementModel":
        from dataclasses import replace
        return replace(self, **changes)

    def temperature_for(self, snr_gi=None):
        """The posterior temperature of each object: by its GI SNR where the model has bins (an
        (n,) array; a non-finite SNR takes ``temperature``), else the one ``temperature``."""
        if snr_gi is None or not self.temperature_snr_edges:
            return float(self.temperature)
        snr = np.asarray(snr_gi, dtype=np.float64).ravel()
        temps = np.asarray(self.temperatures_by_snr, dtype=np.float64)
        bins = np.searchsorted(np.asarray(self.temperature_snr_edges, dtype=np.float64), snr, side="right")
        return np.where(np.isfinite(snr), temps[np.clip(bins, 0, temps.size - 1)], float(self.temperature))


# ----------------------------------------------------------------------------- results
@dataclass
class Posterior:
    """What :func:`intervals` needs, per object, padded to fixed widths.

    ``pz``: (n, nbin) the network's rows (normalised; NaN where none) on ``grid``;
    ``s``: (n, K) float64 ln(1+z) and ``obj`` (n, K) float32 objective (less the object's best) of
    the scanned points kept, sorted by s
    within each window, ``window``: (n, K) int8 their window (-1 padding), ``n_points`` (n,);
    ``win_lo``, ``win_hi``, ``win_mass``: (n, W) each merged window's ends (ln(1+z)) and the
    network's probability inside it; ``n_windows`` (n,).
    """
    grid: PzGrid
    pz: np.ndarray
    s: np.ndarray
    obj: np.ndarray
    window: np.ndarray
    n_points: np.ndarray
    win_lo: np.ndarray
    win_hi: np.ndarray
    win_mass: np.ndarray
    n_windows: np.ndarray
    # The model's (calibrated) temperature, the default of intervals(): one number, or one per
    # object (RefinementModel.temperature_for, by GI SNR).
    temperature: float | np.ndarray = 1.0

    def __len__(self) -> int:
        return self.pz.shape[0]

    def subset(self, rows) -> "Posterior":
        rows = np.asarray(rows)
        return Posterior(self.grid, self.pz[rows], self.s[rows], self.obj[rows], self.window[rows],
                         self.n_points[rows], self.win_lo[rows], self.win_hi[rows], self.win_mass[rows],
                         self.n_windows[rows],
                         self.temperature[rows] if np.ndim(self.temperature) else self.temperature)


@dataclass
class Refinement:
    """Per-object results of :func:`refine` (arrays of length n).

    ``z``: refined redshift (NaN where not run); ``status``: int8 (STATUS_*); ``chi2``: chi-square
    of the best fit at ``z`` (no prior term); ``npix``: pixels used; ``width``: int8 index into the
    model's widths of the chosen self-broadening (-1 where not run); ``evaluations``: float32, the chi2
    evaluations spent, in units of one evaluation over all the object's pixels (the cost);
    ``posterior``: for :func:`intervals`.
    """
    z: np.ndarray
    status: np.ndarray
    chi2: np.ndarray
    npix: np.ndarray
    width: np.ndarray
    evaluations: np.ndarray
    posterior: Posterior

    def __len__(self) -> int:
        return self.z.size

    def subset(self, rows) -> "Refinement":
        rows = np.asarray(rows)
        return Refinement(self.z[rows], self.status[rows], self.chi2[rows], self.npix[rows], self.width[rows],
                          self.evaluations[rows], self.posterior.subset(rows))


def concatenate(parts) -> Refinement:
    """One :class:`Refinement` from several (chunks of one run: same model and grid)."""
    parts = list(parts)
    if not parts:
        raise ValueError("nothing to concatenate")
    p0 = parts[0].posterior

    def cat(get):
        return np.concatenate([get(p) for p in parts])

    post = Posterior(p0.grid, cat(lambda p: p.posterior.pz), cat(lambda p: p.posterior.s),
                     cat(lambda p: p.posterior.obj), cat(lambda p: p.posterior.window),
                     cat(lambda p: p.posterior.n_points), cat(lambda p: p.posterior.win_lo),
                     cat(lambda p: p.posterior.win_hi), cat(lambda p: p.posterior.win_mass),
                     cat(lambda p: p.posterior.n_windows),
                     cat(lambda p: np.broadcast_to(np.asarray(p.posterior.temperature, dtype=np.float64), (len(p),)))
                     if any(np.ndim(p.posterior.temperature) for p in parts) else p0.temperature)
    return Refinement(cat(lambda p: p.z), cat(lambda p: p.status), cat(lambda p: p.chi2), cat(lambda p: p.npix),
                      cat(lambda p: p.width), cat(lambda p: p.evaluations), post)


# ----------------------------------------------------------------------------- numba kernels
# Float and integer settings travel to the kernels packed in two arrays (indices below).
_F_U0, _F_INVDU, _F_ULAST, _F_WHALF, _F_CSTEP, _F_FSTEP, _F_FHALF, _F_PRIORW, _F_FLOOR, _F_PKMINP, \
    _F_MAXREL, _F_RIDGE, _F_X0, _F_DX, _F_SGRIDLO, _F_SGRIDHI, _F_MINMARG, \
    _F_GAPGV, _F_GAPGI = range(19)
_I_CWIDTH, _I_NMIN, _I_PKSMOOTH, _I_PKMASS, _I_PKSEP, _I_NPEAKS, _I_FINEK, _I_MAXPTS, _I_MAXWIN, _I_ZSPACE, \
    _I_NPROF, _I_CBIN, _I_PARSTEPS, _I_PROFROUNDS = range(14)


@numba.njit(cache=True, nogil=True)
def _order(values, n):
    """Indices sorting values[:n] ascending, ties in index order (insertion sort: n is small)."""
    idx = np.empty(n, np.int64)
    for i in range(n):
        idx[i] = i
    for i in range(1, n):
        k = idx[i]
        v = values[k]
        j = i - 1
        while j >= 0 and values[idx[j]] > v:
            idx[j + 1] = idx[j]
            j -= 1
        idx[j + 1] = k
    return idx


@numba.njit(cache=True, nogil=True)
def _median(a, n):
    """Median of a[:n] (n >= 1; a[:n] is reordered): quickselect, the mean of the middle two for even n."""
    def select(a, lo, hi, k):
        while hi > lo:
            pivot = a[(lo + hi) // 2]
            i = lo
            j = hi
            while i <= j:
                while a[i] < pivot:
                    i += 1
                while a[j] > pivot:
                    j -= 1
                if i <= j:
                    tmp = a[i]
                    a[i] = a[j]
                    a[j] = tmp
                    i += 1
                    j -= 1
            if k <= j:
                hi = j
            elif k >= i:
                lo = i
            else:
                break
        return a[k]
    upper = select(a, 0, n - 1, n // 2)
    if n % 2 == 1:
        return upper
    lower = a[0]
    for i in range(1, n // 2):      # after the selection a[:n//2] holds the n//2 smallest values
        if a[i] > lower:
            lower = a[i]
    return 0.5 * (lower + upper)


@numba.njit(cache=True, nogil=True)
def _find_peaks_row(p, smooth, mass_half, min_prob, min_sep, n_peaks, out):
    """Peaks of one p(z) row (bin indices into ``out``, by decreasing probability); returns how many.

    A peak is a local maximum of p smoothed over ``smooth`` bins (a running mean, odd width; the
    middle of a plateau, the lower of two middle bins), ranked by the probability within
    +-``mass_half`` bins of it; kept when that is >= ``min_prob`` and it lies more than ``min_sep``
    bins from every peak already kept; at most ``n_peaks``.
    """
    nb = p.size
    if n_peaks <= 0 or nb == 0:
        return 0
    r = smooth // 2
    sm = np.empty(nb)
    for i in range(nb):
        a = max(0, i - r)
        b = min(nb - 1, i + r)
        acc = 0.0
        for j in range(a, b + 1):
            acc += p[j]
        sm[i] = acc / (b - a + 1)
    cand = np.empty(nb, np.int64)
    mass = np.empty(nb)
    nc = 0
    j = 0
    while j < nb:                 # runs of equal smoothed values; a run higher than both neighbours is a peak
        k = j
        while k + 1 < nb and sm[k + 1] == sm[j]:
            k += 1
        if sm[j] > 0 and (j == 0 or sm[j - 1] < sm[j]) and (k == nb - 1 or sm[k + 1] < sm[j]):
            i = (j + k) // 2
            acc = 0.0
            for q in range(max(0, i - mass_half), min(nb - 1, i + mass_half) + 1):
                acc += p[q]
            cand[nc] = i
            mass[nc] = acc
            nc += 1
        j = k + 1
    for q in range(nc):
        mass[q] = -mass[q]
    order = _order(mass, nc)
    for q in range(nc):
        mass[q] = -mass[q]
    kept = 0
    for q in range(nc):
        i = cand[order[q]]
        if mass[order[q]] < min_prob:
            break
        ok = True
        for k in range(kept):
            if abs(i - out[k]) <= min_sep:
                ok = False
                break
        if ok:
            out[kept] = i
            kept += 1
            if kept >= n_peaks:
                break
    return kept


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _normal_equations(s, px, sw, y, n_gv, npx, T_gv, T_gi, u0, inv_du, ngrid, A, b, M):
    """A (upper triangle) and b of the weighted least squares at ln(1+z) = s.

    M (nvec, >= npx) receives each pixel's interpolated basis values times 1/err; then b = M y and
    A = M M^T by 2x2-blocked dot products (the templates are (ngrid, nvec), one row per grid point)."""
    nvec = b.size
    top = ngrid - 1.000001
    for band in range(2):
        T = T_gv if band == 0 else T_gi
        lo = 0 if band == 0 else n_gv
        hi = n_gv if band == 0 else npx
        for p in range(lo, hi):
            pos = (px[p] - s - u0) * inv_du
            pos = min(max(pos, 0.0), top)
            k = np.uint64(pos)
            f = (pos - k) * sw[p]
            g = sw[p] - f
            r0 = T[k]
            r1 = T[k + np.uint64(1)]
            for i in range(nvec):
                M[i, p] = g * r0[i] + f * r1[i]
    for i in range(nvec):
        mi = M[i]
        acc = 0.0
        for p in range(npx):
            acc += mi[p] * y[p]
        b[i] = acc
    for i in range(0, nvec, 2):
        i2 = min(i + 1, nvec - 1)
        mi = M[i]
        mi2 = M[i2]
        for j in range(i, nvec, 2):
            j2 = min(j + 1, nvec - 1)
            mj = M[j]
            mj2 = M[j2]
            a00 = 0.0
            a01 = 0.0
            a10 = 0.0
            a11 = 0.0
            for p in range(npx):
                x0 = mi[p]
                x1 = mi2[p]
                z0 = mj[p]
                z1 = mj2[p]
                a00 += x0 * z0
                a01 += x0 * z1
                a10 += x1 * z0
                a11 += x1 * z1
            A[i, j] = a00
            A[i, j2] = a01
            A[i2, j] = a10
            A[i2, j2] = a11


@numba.njit(cache=True, nogil=True)
def _chi2_at(s, px, sw, y, n_gv, npx, swff, tmpl, widx, u0, inv_du, ngrid, ridge, A, b, t, M):
    """chi2 of the best linear combination of the basis broadened with width ``widx`` at ln(1+z) = s.

    px: ln(lambda) of the pixels (GV first, n_gv of them), sw: 1/err, y: flux/err, swff: sum y^2."""
    nvec = b.size
    _normal_equations(s, px, sw, y, n_gv, npx, tmpl[0, widx], tmpl[1, widx], u0, inv_du, ngrid, A, b, M)
    # Cholesky A = U^T U on the upper triangle (in place), then t = U^-T b: b^T A^-1 b = |t|^2.
    dmax = 0.0
    for i in range(nvec):
        dmax = max(dmax, A[i, i])
    if dmax <= 0.0:
        return swff
    lam = ridge * dmax
    tiny = 1e-14 * dmax
    acc = 0.0
    for j in range(nvec):
        d = A[j, j] + lam
        for k in range(j):
            d -= A[k, j] * A[k, j]
        if d <= tiny:                      # a direction the pixels do not constrain: dropped
            A[j, j] = 0.0
            for i in range(j + 1, nvec):
                A[j, i] = 0.0
            t[j] = 0.0
            continue
        u = math.sqrt(d)
        A[j, j] = u
        for i in range(j + 1, nvec):
            v = A[j, i]
            for k in range(j):
                v -= A[k, j] * A[k, i]
            A[j, i] = v / u
        yj = b[j]
        for k in range(j):
            yj -= A[k, j] * t[k]
        yj /= u
        t[j] = yj
        acc += yj * yj
    return swff - acc


@numba.njit(cache=True, nogil=True)
def _ln_prior(s, dens, dmax, floor, x0, dx, zspace):
    """ln of the network's density in s at ``s`` (linear between bin centres, edge values beyond,
    floored at ``floor`` x max)."""
    x = math.expm1(s) if zspace else s
    pos = (x - x0) / dx
    nb = dens.size
    if pos <= 0.0:
        d = dens[0]
    elif pos >= nb - 1:
        d = dens[nb - 1]
    else:
        k = int(pos)
        f = pos - k
        d = (1.0 - f) * dens[k] + f * dens[k + 1]
    lo = floor * dmax
    return math.log(d if d > lo else lo)


@numba.njit(cache=True, nogil=True)
def _objective(s, widx, skip, skip_c, px, pw, pwf, n_gv, npx, swff, tmpl, fpar, dens, dmax, zspace, A, b, t, M):
    """(objective, chi2, width) at s with width ``widx``, or with the best width when widx < 0 (the width
    ``skip``, if >= 0, is not evaluated again: its chi2 is ``skip_c``)."""
    ngrid = tmpl.shape[2]
    w_lo = widx if widx >= 0 else 0
    w_hi = widx + 1 if widx >= 0 else tmpl.shape[1]
    c = np.inf
    best_w = w_lo
    if skip >= 0 and widx < 0:
        c = skip_c
        best_w = skip
    for w in range(w_lo, w_hi):
        if w == skip and widx < 0:
            continue
        cw = _chi2_at(s, px, pw, pwf, n_gv, npx, swff, tmpl, w, fpar[_F_U0], fpar[_F_INVDU], ngrid,
                      fpar[_F_RIDGE], A, b, t, M)
        if cw < c:
            c = cw
            best_w = w
    lp = _ln_prior(s, dens, dmax, fpar[_F_FLOOR], fpar[_F_X0], fpar[_F_DX], zspace)
    return c - 2.0 * fpar[_F_PRIORW] * lp, c, best_w


@numba.njit(cache=True, nogil=True)
def _gather_pixels(o, gv_wave, gv_flux, gv_err, gv_off, gv_pres, gi_wave, gi_flux, gi_err, gi_off, gi_pres,
                   max_rel, px, sw, y):
    """Usable pixels of object o (GV first): ln(lambda), 1/err and flux/err (flux and err scaled by the
    median ERR). Returns (npix, n_gv, sum (flux/err)^2)."""
    a0 = gv_off[o] if gv_pres[o] else 0
    b0 = gv_off[o + 1] if gv_pres[o] else 0
    a1 = gi_off[o] if gi_pres[o] else 0
    b1 = gi_off[o + 1] if gi_pres[o] else 0
    errs = np.empty((b0 - a0) + (b1 - a1))
    m = 0
    for q in range(a0, b0):
        e = gv_err[q]
        if np.isfinite(gv_wave[q]) and np.isfinite(gv_flux[q]) and np.isfinite(e) and e > 0 and gv_wave[q] > 0:
            errs[m] = e
            m += 1
    for q in range(a1, b1):
        e = gi_err[q]
        if np.isfinite(gi_wave[q]) and np.isfinite(gi_flux[q]) and np.isfinite(e) and e > 0 and gi_wave[q] > 0:
            errs[m] = e
            m += 1
    if m == 0:
        return 0, 0, 0.0
    med = _median(errs, m)
    if not (med > 0 and np.isfinite(med)):
        return 0, 0, 0.0
    cut = max_rel * med
    n = 0
    swff = 0.0
    n_gv = 0
    for band in range(2):
        wave = gv_wave if band == 0 else gi_wave
        flux = gv_flux if band == 0 else gi_flux
        err = gv_err if band == 0 else gi_err
        a = a0 if band == 0 else a1
        bb = b0 if band == 0 else b1
        for q in range(a, bb):
            e = err[q]
            if np.isfinite(wave[q]) and np.isfinite(flux[q]) and np.isfinite(e) and e > 0 and wave[q] > 0 \
                    and e < cut:
                inv = med / e
                yy = flux[q] / e
                if not (np.isfinite(inv) and np.isfinite(yy * yy)):
                    continue
                px[n] = math.log(wave[q])
                sw[n] = inv
                y[n] = yy
                swff += yy * yy
                n += 1
        if band == 0:
            n_gv = n
    return n, n_gv, swff


@numba.njit(cache=True, nogil=True)
def _bin_pixels(px, sw, y, npx, n_gv, nbin, max_gap_gv, max_gap_gi, bx, bsw, by):
    """Runs of up to ``nbin`` consecutive pixels of one band (each closer than max_gap Angstrom to the
    previous one) combined into one: inverse-variance weighted flux and ln lambda, summed weight.
    Returns (count, count in GV, sum of the binned (flux/err)^2)."""
    nb = 0
    nb_gv = 0
    sbb = 0.0
    p = 0
    while p < npx:
        band_end = n_gv if p < n_gv else npx
        gap = max_gap_gv if p < n_gv else max_gap_gi
        w = sw[p] * sw[p]
        wx = w * px[p]
        wf = sw[p] * y[p]            # w * flux = sw^2 * (y / sw)
        q = p + 1
        while q < band_end and q - p < nbin and math.exp(px[q]) - math.exp(px[q - 1]) < gap:
            wq = sw[q] * sw[q]
            w += wq
            wx += wq * px[q]
            wf += sw[q] * y[q]
            q += 1
        bx[nb] = wx / w
        bsw[nb] = math.sqrt(w)
        by[nb] = wf / bsw[nb]        # (wf / w) * sqrt(w)
        sbb += by[nb] * by[nb]
        nb += 1
        if q <= n_gv:
            nb_gv = nb
        p = q
    return nb, nb_gv, sbb


@numba.njit(cache=True, nogil=True)
def _fine_scan(s0, w, wlo, whi, px, pw, pwf, n_gv, npx, swff, tmpl, fpar, ipar, dens, dmax, zspace, A, b, t, M,
               fs, fo, fc):
    """Fine scan around s0 with width w inside [wlo, whi]: the points s0 + k fine_step, |k| <= K, then on
    (up to K more) while the minimum is at an end the window allows, then up to ``parabola_steps``
    vertices of the parabola through the lowest point and its two neighbours (successive parabolic
    interpolation: each vertex evaluated joins the points).

    Fills fs/fo/fc (s, objective, chi2; ascending s) and returns (count, s, objective, chi2 of the
    minimum, at_edge, evaluations): at_edge when the minimum is the last fine point inside the window."""
    step = fpar[_F_FSTEP]
    K = ipar[_I_FINEK]
    n_vertex = ipar[_I_PARSTEPS]
    tol = 1e-9
    kmin = -K
    while kmin < 0 and s0 + kmin * step < wlo - tol:
        kmin += 1
    kmax = K
    while kmax > 0 and s0 + kmax * step > whi + tol:
        kmax -= 1
    n = 0
    q = kmin            # next point of the initial scan
    extra = 0           # points walked on
    vertices = -1       # vertices evaluated; -1 while scanning
    at_edge = False
    evals = 0
    while True:         # one evaluation per pass (a single call site keeps the compiled code small)
        if q <= kmax:
            s = s0 + q * step
            q += 1
        else:
            j = 0
            for r in range(1, n):
                if fo[r] < fo[j]:
                    j = r
            if vertices < 0 and extra < K and j == n - 1 and fs[n - 1] + step <= whi + tol:
                s = fs[n - 1] + step
                extra += 1
            elif vertices < 0 and extra < K and j == 0 and fs[0] - step >= wlo - tol:
                s = fs[0] - step
                extra += 1
            else:
                if vertices < 0:
                    at_edge = (j == n - 1 and fs[j] + step > whi + tol) or (j == 0 and fs[j] - step < wlo - tol)
                    vertices = 0
                if vertices >= n_vertex or not (0 < j < n - 1):
                    break
                # vertex of the parabola through (j-1, j, j+1), unequal spacing allowed
                da = fs[j] - fs[j - 1]
                dc = fs[j] - fs[j + 1]
                ga = fo[j] - fo[j - 1]
                gc = fo[j] - fo[j + 1]
                den = da * gc - dc * ga
                if not den < 0:          # convex through the three points (fo[j] the lowest)
                    break
                s = fs[j] - 0.5 * (da * da * gc - dc * dc * ga) / den
                if not (fs[j - 1] < s < fs[j + 1]) or abs(s - fs[j]) < 1e-3 * min(da, -dc):
                    break
                vertices += 1
        o, c, _ = _objective(s, w, -1, 0.0, px, pw, pwf, n_gv, npx, swff, tmpl, fpar, dens, dmax, zspace, A, b, t, M)
        evals += 1
        r = n                            # insert, keeping the points sorted by s
        while r > 0 and fs[r - 1] > s:
            fs[r] = fs[r - 1]
            fo[r] = fo[r - 1]
            fc[r] = fc[r - 1]
            r -= 1
        fs[r] = s
        fo[r] = o
        fc[r] = c
        n += 1
    j = 0
    for r in range(1, n):
        if fo[r] < fo[j]:
            j = r
    return n, fs[j], fo[j], fc[j], at_edge, evals


@numba.njit(cache=True, nogil=True)
def _refine_one(o, gv_wave, gv_flux, gv_err, gv_off, gv_pres, gi_wave, gi_flux, gi_err, gi_off, gi_pres,
                pz, dens_factor, z_net, tmpl, fpar, ipar,
                out_z, out_status, out_chi2, out_npix, out_width, out_cost,
                post_s, post_obj, post_win, post_n, win_lo, win_hi, win_mass, n_win):
    nb = pz.shape[1]
    nvec = tmpl.shape[3]
    zspace = ipar[_I_ZSPACE] != 0
    out_z[o] = np.nan
    out_status[o] = 1
    out_chi2[o] = np.nan
    out_width[o] = -1
    out_cost[o] = 0.0
    post_n[o] = 0
    n_win[o] = 0
    npx_max = 0
    if gv_pres[o]:
        npx_max += gv_off[o + 1] - gv_off[o]
    if gi_pres[o]:
        npx_max += gi_off[o + 1] - gi_off[o]
    px = np.empty(npx_max)
    pw = np.empty(npx_max)
    pwf = np.empty(npx_max)
    npx, n_gv, swff = _gather_pixels(o, gv_wave, gv_flux, gv_err, gv_off, gv_pres, gi_wave, gi_flux, gi_err,
                                     gi_off, gi_pres, fpar[_F_MAXREL], px, pw, pwf)
    out_npix[o] = npx
    # The network's p(z): a finite row with probability.
    row = pz[o]
    total = 0.0
    for i in range(nb):
        if not np.isfinite(row[i]) or row[i] < 0:
            return
        total += row[i]
    if not total > 0:
        return
    zn = z_net[o]
    if npx <= nvec or not np.isfinite(zn) or zn <= -1.0:
        return
    dens = np.empty(nb)
    dmax = 0.0
    for i in range(nb):
        dens[i] = row[i] / total * dens_factor[i]
        dmax = max(dmax, dens[i])
    # Where the basis covers every pixel.
    xmin = np.inf
    xmax = -np.inf
    for p in range(npx):
        xmin = min(xmin, px[p])
        xmax = max(xmax, px[p])
    s_allow_lo = max(xmax - fpar[_F_ULAST], fpar[_F_SGRIDLO])
    s_allow_hi = min(xmin - fpar[_F_U0], fpar[_F_SGRIDHI])
    # Windows: Z and the peaks, clipped, sorted, merged.
    peaks = np.empty(max(ipar[_I_NPEAKS], 1), np.int64)
    npk = _find_peaks_row(row, ipar[_I_PKSMOOTH], ipar[_I_PKMASS], fpar[_F_PKMINP] * total, ipar[_I_PKSEP],
                          ipar[_I_NPEAKS], peaks)
    h = fpar[_F_WHALF]
    cen = np.empty(npk + 1)
    cen[0] = math.log1p(zn)
    for k in range(npk):
        xc = fpar[_F_X0] + fpar[_F_DX] * peaks[k]
        cen[k + 1] = math.log1p(xc) if zspace else xc
    cen = cen[_order(cen, npk + 1)]
    wl = np.empty(npk + 1)
    wh = np.empty(npk + 1)
    nw = 0
    for k in range(npk + 1):
        lo = max(cen[k] - h, s_allow_lo)
        hi = min(cen[k] + h, s_allow_hi)
        if not hi >= lo:
            continue
        if nw > 0 and lo <= wh[nw - 1]:
            wh[nw - 1] = max(wh[nw - 1], hi)
        else:
            wl[nw] = lo
            wh[nw] = hi
            nw += 1
    if nw == 0:
        return
    A = np.empty((nvec, nvec))
    bvec = np.empty(nvec)
    tv = np.empty(nvec)
    M = np.empty((nvec, max(npx, 1)))
    # Coarse scan, on pixels binned by coarse_bin (their chi2 shifted by the within-bin scatter, which
    # does not depend on z while the model is smooth over a bin, so coarse and fine values compare).
    if ipar[_I_CBIN] > 1:
        bx = np.empty(npx)
        bsw = np.empty(npx)
        by = np.empty(npx)
        nbx, nb_gv, sbb = _bin_pixels(px, pw, pwf, npx, n_gv, ipar[_I_CBIN], fpar[_F_GAPGV], fpar[_F_GAPGI],
                                      bx, bsw, by)
    else:
        bx = px
        bsw = pw
        by = pwf
        nbx = npx
        nb_gv = n_gv
        sbb = swff
    shift = swff - sbb
    cost = 0.0                   # chi2 evaluations, in units of one over all the object's pixels
    maxpts = ipar[_I_MAXPTS]
    cs = np.empty(maxpts)
    co = np.empty(maxpts)
    cc = np.empty(maxpts)
    cwid = np.empty(maxpts, np.int64)
    cwin = np.empty(maxpts, np.int64)
    nc = 0
    cw = ipar[_I_CWIDTH]
    for k in range(nw):
        width = wh[k] - wl[k]
        npt = 1 if width <= 1e-12 else int(math.ceil(width / fpar[_F_CSTEP] - 1e-9)) + 1
        for q in range(npt):
            if nc >= maxpts:             # cannot happen (max_points bounds it); never write past the arrays
                break
            s = wl[k] + (width * q / (npt - 1) if npt > 1 else 0.0)
            ob, c, bw = _objective(s, cw, -1, 0.0, bx, bsw, by, nb_gv, nbx, sbb, tmpl, fpar, dens, dmax, zspace,
                                   A, bvec, tv, M)
            cost += (tmpl.shape[1] if cw < 0 else 1) * nbx / npx
            cs[nc] = s
            co[nc] = ob + shift
            cc[nc] = c + shift
            cwid[nc] = bw
            cwin[nc] = k
            nc += 1
    # Local minima of the coarse objective within each window, best first, separated.
    isminimum = np.zeros(nc, np.bool_)
    for q in range(nc):
        left = q == 0 or cwin[q - 1] != cwin[q] or co[q] <= co[q - 1]
        right = q == nc - 1 or cwin[q + 1] != cwin[q] or co[q] < co[q + 1]
        isminimum[q] = left and right
    order = _order(co, nc)
    nmin = ipar[_I_NMIN]
    chosen = np.empty(nmin, np.int64)
    nch = 0
    sep = 2.0 * fpar[_F_FHALF]
    for r in range(nc):
        q = order[r]
        if not isminimum[q]:
            continue
        ok = True
        for m in range(nch):
            if abs(cs[q] - cs[chosen[m]]) <= sep:
                ok = False
                break
        if ok and nch > 0 and co[q] - co[chosen[0]] > fpar[_F_MINMARG]:
            break                      # this and every later minimum is too far above the best
        if ok:
            chosen[nch] = q
            nch += 1
            if nch >= nmin:
                break
    # Each minimum: profile the width there, fine scan, parabola.
    K = ipar[_I_FINEK]
    fcap = 3 * K + 2 + ipar[_I_PARSTEPS]
    fs_all = np.empty(nmin * fcap)
    fo_all = np.empty(nmin * fcap)
    fn_all = np.zeros(nmin, np.int64)
    fwin = np.empty(nmin, np.int64)
    best_o = np.inf
    best_s = np.nan
    best_c = np.nan
    best_w = -1
    best_edge = False
    fs = np.empty(fcap)
    fo = np.empty(fcap)
    fc = np.empty(fcap)
    for m in range(nch):
        q = chosen[m]
        k = cwin[q]
        w = cwid[q]
        # Profile the width at the coarse minimum; with profile_rounds > 1, again at the fine minimum,
        # scanning again from there while the width changes.
        rounds = ipar[_I_PROFROUNDS] if (cw >= 0 and tmpl.shape[1] > 1 and m < ipar[_I_NPROF]) else 0
        s_start = cs[q]
        skip = cw if ipar[_I_CBIN] <= 1 else -1            # the coarse chi2 is exact only on unbinned pixels
        skip_c = cc[q]
        done = 0
        while True:
            if done < rounds:
                _, _, w_new = _objective(s_start, -1, skip, skip_c, px, pw, pwf, n_gv, npx, swff, tmpl, fpar, dens,
                                         dmax, zspace, A, bvec, tv, M)
                cost += tmpl.shape[1] - (1 if skip >= 0 else 0)
                if done > 0 and w_new == w:
                    break                                  # the width stands: so does the last scan
                w = w_new
                done += 1
            n, s_m, o_m, c_m, at_edge, ne = _fine_scan(s_start, w, wl[k], wh[k], px, pw, pwf, n_gv, npx, swff, tmpl,
                                                       fpar, ipar, dens, dmax, zspace, A, bvec, tv, M, fs, fo, fc)
            cost += ne
            if done >= rounds:
                break
            s_start = s_m
            skip = w
            skip_c = c_m
        for r in range(n):
            fs_all[m * fcap + r] = fs[r]
            fo_all[m * fcap + r] = fo[r]
        fn_all[m] = n
        fwin[m] = k
        if o_m < best_o:
            best_o = o_m
            best_s = s_m
            best_c = c_m
            best_w = w
            best_edge = at_edge
    if not np.isfinite(best_o):
        return
    out_z[o] = math.expm1(best_s)
    out_chi2[o] = best_c
    out_width[o] = best_w
    out_status[o] = 2 if best_edge else 0
    out_cost[o] = cost
    # The posterior: each window's network mass and its scanned points (fine ones replace coarse ones).
    n_win[o] = nw
    x0 = fpar[_F_X0]
    dx = fpar[_F_DX]
    for k in range(nw):
        win_lo[o, k] = wl[k]
        win_hi[o, k] = wh[k]
        xa = math.expm1(wl[k]) if zspace else wl[k]
        xb = math.expm1(wh[k]) if zspace else wh[k]
        ia = max(0, int(math.floor((xa - x0) / dx + 0.5)))
        ib = min(nb - 1, int(math.floor((xb - x0) / dx + 0.5)))
        mass = 0.0
        for i in range(ia, ib + 1):
            e0 = x0 + (i - 0.5) * dx
            e1 = e0 + dx
            ov = min(e1, xb) - max(e0, xa)
            if ov > 0:
                mass += row[i] / total * ov / dx
        win_mass[o, k] = mass
    npt = 0
    for k in range(nw):
        start = npt
        for q in range(nc):
            if cwin[q] != k:
                continue
            covered = False
            for m in range(nch):
                nf = fn_all[m]
                if fwin[m] == k and nf > 0 and fs_all[m * fcap] - 1e-12 <= cs[q] <= fs_all[m * fcap + nf - 1] + 1e-12:
                    covered = True
                    break
            if not covered and npt < post_s.shape[1]:
                post_s[o, npt] = cs[q]
                post_obj[o, npt] = co[q] - best_o
                post_win[o, npt] = k
                npt += 1
        for m in range(nch):
            if fwin[m] != k:
                continue
            for r in range(fn_all[m]):
                if npt < post_s.shape[1]:
                    post_s[o, npt] = fs_all[m * fcap + r]
                    post_obj[o, npt] = fo_all[m * fcap + r] - best_o
                    post_win[o, npt] = k
                    npt += 1
        # Insertion sort of this window's points by s.
        for q in range(start + 1, npt):
            sv = post_s[o, q]
            ov = post_obj[o, q]
            r = q - 1
            while r >= start and post_s[o, r] > sv:
                post_s[o, r + 1] = post_s[o, r]
                post_obj[o, r + 1] = post_obj[o, r]
                r -= 1
            post_s[o, r + 1] = sv
            post_obj[o, r + 1] = ov
    post_n[o] = npt


@numba.njit(cache=True, nogil=True)
def _refine_block(blocks, counter, gv_wave, gv_flux, gv_err, gv_off, gv_pres, gi_wave, gi_flux, gi_err, gi_off,
                  gi_pres, pz, dens_factor, z_net, tmpl, fpar, ipar, out_z, out_status, out_chi2, out_npix, out_width,
                  out_cost,
                  post_s, post_obj, post_win, post_n, win_lo, win_hi, win_mass, n_win):
    """Objects blocks[counter[0]] .. blocks[counter[0] + 1] - 1 (one block per call; the threads of
    :func:`refine` each call this on their own blocks without the GIL)."""
    for o in range(blocks[counter[0]], blocks[counter[0] + 1]):
        _refine_one(o, gv_wave, gv_flux, gv_err, gv_off, gv_pres, gi_wave, gi_flux, gi_err, gi_off, gi_pres,
                    pz, dens_factor, z_net, tmpl, fpar, ipar, out_z, out_status, out_chi2, out_npix, out_width,
                    out_cost,
                    post_s, post_obj, post_win, post_n, win_lo, win_hi, win_mass, n_win)


# ----------------------------------------------------------------------------- Python entry points
def _settings(model: RefinementModel, grid: PzGrid):
    fpar = np.zeros(19)
    fpar[_F_U0] = model.loglam0
    fpar[_F_INVDU] = 1.0 / model.dloglam
    fpar[_F_ULAST] = model.loglam0 + model.dloglam * (model.n_grid - 1)
    fpar[_F_WHALF] = model.window_half
    fpar[_F_CSTEP] = model.coarse_step
    fpar[_F_FSTEP] = model.fine_step
    fpar[_F_FHALF] = model.fine_half
    fpar[_F_PRIORW] = model.prior_weight
    fpar[_F_FLOOR] = model.pz_floor
    fpar[_F_PKMINP] = model.peak_min_prob
    fpar[_F_MAXREL] = model.max_rel_err
    fpar[_F_RIDGE] = model.ridge
    fpar[_F_MINMARG] = model.minimum_margin
    # Pixels further apart than 1.5 dispersions (a masked run between them) are never binned together.
    fpar[_F_GAPGV] = 1.5 * model.dispersion[0]
    fpar[_F_GAPGI] = 1.5 * model.dispersion[1]
    fpar[_F_X0] = grid.z0
    fpar[_F_DX] = grid.dz
    with np.errstate(invalid="ignore", divide="ignore"):
        edges = np.log1p(grid.edges()[[0, -1]])
    fpar[_F_SGRIDLO] = edges[0] if np.isfinite(edges[0]) else -np.inf
    fpar[_F_SGRIDHI] = edges[1]
    ipar = np.zeros(14, dtype=np.int64)
    ipar[_I_PROFROUNDS] = model.profile_rounds
    ipar[_I_PARSTEPS] = model.parabola_steps
    ipar[_I_CBIN] = model.coarse_bin
    ipar[_I_NPROF] = model.profile_minima
    ipar[_I_CWIDTH] = model.coarse_width
    ipar[_I_NMIN] = model.n_minima
    ipar[_I_PKSMOOTH] = model.peak_smooth
    ipar[_I_PKMASS] = model.peak_mass_half
    ipar[_I_PKSEP] = model.peak_min_sep
    ipar[_I_NPEAKS] = model.n_peaks
    ipar[_I_FINEK] = model.fine_points
    ipar[_I_MAXPTS] = model.max_points
    ipar[_I_MAXWIN] = model.max_windows
    ipar[_I_ZSPACE] = 1 if grid.space == "z" else 0
    return fpar, ipar


def density_factor(grid: PzGrid) -> np.ndarray:
    """Per bin, 1 / (its width in ln(1+z)): turns a bin's probability into a density in ln(1+z)."""
    if grid.space == "ln1pz":
        return np.full(grid.nbin, 1.0 / grid.dz)
    return (1.0 + grid.coordinates()) / grid.dz


def _band_arrays(bands: dict, band: str, n: int):
    data = bands.get(band) if bands is not None else None
    if data is None:
        e = np.zeros(0)
        return e, e, e, np.zeros(n + 1, np.int64), np.zeros(n, np.bool_)
    if len(data.present) != n:
        raise ValueError(f"band {band} holds {len(data.present)} objects, p(z) {n}")
    return (np.ascontiguousarray(data.wave, dtype=np.float64), np.ascontiguousarray(data.flux, dtype=np.float64),
            np.ascontiguousarray(data.err, dtype=np.float64), np.ascontiguousarray(data.offsets, dtype=np.int64),
            np.ascontiguousarray(data.present, dtype=np.bool_))


BLOCK = 16          # objects per unit of work handed to a thread


def default_threads() -> int:
    """Threads :func:`refine` uses unless told: the cores this process may run on."""
    import os
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def refine(bands: dict, pz, grid: PzGrid, z_net, model: RefinementModel, threads: int | None = None,
           snr_gi=None) -> Refinement:
    """Refine one chunk of objects.

    ``bands``: {'GV': BandData, 'GI': BandData} as ``ProductReader.iter_chunks`` yields them (a
    missing band may be absent); ``pz``: (n, nbin) the network's p(z) rows on ``grid``; ``z_net``:
    (n,) the network's Z. ``threads``: worker threads, each running the compiled kernel without the
    GIL on blocks of BLOCK objects (default :func:`default_threads`; 1: in the calling thread). The
    result does not depend on the number of threads. ``snr_gi``: (n,) the objects' GI SNR, which
    picks each posterior's temperature where the model has them by SNR
    (:meth:`RefinementModel.temperature_for`).
    """
    z_net = np.ascontiguousarray(z_net, dtype=np.float64).ravel()
    n = z_net.size
    if snr_gi is not None and np.size(snr_gi) != n:
        raise ValueError(f"snr_gi holds {np.size(snr_gi)} values, z_net {n}")
    pz = np.asarray(pz)
    if pz.ndim != 2 or pz.shape != (n, grid.nbin):
        raise ValueError(f"p(z) must be ({n}, {grid.nbin}), not {pz.shape}")
    pz = np.ascontiguousarray(normalise_rows(pz) if n else np.zeros((0, grid.nbin)))
    gv = _band_arrays(bands, "GV", n)
    gi = _band_arrays(bands, "GI", n)
    fpar, ipar = _settings(model, grid)
    K, W = model.max_points, model.max_windows
    out_z = np.full(n, np.nan)
    out_status = np.full(n, STATUS_NOT_RUN, dtype=np.int8)
    out_chi2 = np.full(n, np.nan)
    out_npix = np.zeros(n, dtype=np.int32)
    out_width = np.full(n, -1, dtype=np.int8)
    out_cost = np.zeros(n, dtype=np.float32)
    post_s = np.zeros((n, K), dtype=np.float64)
    post_obj = np.zeros((n, K), dtype=np.float32)
    post_win = np.full((n, K), -1, dtype=np.int8)
    post_n = np.zeros(n, dtype=np.int32)
    win_lo = np.full((n, W), np.nan)
    win_hi = np.full((n, W), np.nan)
    win_mass = np.zeros((n, W))
    n_win = np.zeros(n, dtype=np.int8)
    if n:
        args = (*gv, *gi, pz, density_factor(grid), z_net, model.templates, fpar, ipar, out_z, out_status, out_chi2,
                out_npix, out_width, out_cost, post_s, post_obj, post_win, post_n, win_lo, win_hi, win_mass, n_win)
        blocks = np.append(np.arange(0, n, BLOCK, dtype=np.int64), n)
        n_blocks = blocks.size - 1
        threads = default_threads() if threads is None else max(1, int(threads))
        threads = min(threads, n_blocks)

        import itertools
        next_block = itertools.count()      # next() on it is atomic under the GIL: blocks go to free threads

        def work() -> None:
            counter = np.zeros(1, dtype=np.int64)
            k = next(next_block)
            while k < n_blocks:
                counter[0] = k
                _refine_block(blocks, counter, *args)
                k = next(next_block)

        if threads == 1:
            work()
        else:
            import threading
            errors = []

            def run():
                try:
                    work()
                except BaseException as exc:    # noqa: BLE001 - re-raised in the caller below
                    errors.append(exc)

            pool = [threading.Thread(target=run, name=f"csst_sls_z-refine-{t}") for t in range(threads)]
            for th in pool:
                th.start()
            for th in pool:
                th.join()
            if errors:
                raise errors[0]
    post = Posterior(grid, pz, post_s, post_obj, post_win, post_n, win_lo, win_hi, win_mass, n_win,
                     model.temperature_for(snr_gi))
    return Refinement(out_z, out_status, out_chi2, out_npix, out_width, out_cost, post)


def find_peaks(pz_row, model: RefinementModel) -> np.ndarray:
    """Bin indices of the p(z) peaks that get a window (by decreasing probability; rules in
    :func:`_find_peaks_row`, numbers from ``model``)."""
    row = np.ascontiguousarray(pz_row, dtype=np.float64)
    total = float(np.sum(row))
    out = np.zeros(max(int(model.n_peaks), 1), dtype=np.int64)
    k = _find_peaks_row(row, int(model.peak_smooth), int(model.peak_mass_half), float(model.peak_min_prob) * total,
                        int(model.peak_min_sep), int(model.n_peaks), out)
    return out[:k].copy()


def chi2_curve(bands: dict, k: int, s, model: RefinementModel, width: int) -> np.ndarray:
    """chi2 of object ``k`` of a chunk at each ln(1+z) in ``s`` with width index ``width`` (no prior, no
    windows: for diagnostics and tests)."""
    n = len(bands["GV"].present) if "GV" in bands else len(bands["GI"].present)
    gv = _band_arrays(bands, "GV", n)
    gi = _band_arrays(bands, "GI", n)
    return _chi2_curve(k, *gv, *gi, np.ascontiguousarray(s, dtype=np.float64), model.templates, int(width),
                       model.loglam0, 1.0 / model.dloglam, model.max_rel_err, model.ridge)


@numba.njit(cache=True, nogil=True)
def _chi2_curve(o, gv_wave, gv_flux, gv_err, gv_off, gv_pres, gi_wave, gi_flux, gi_err, gi_off, gi_pres, s, tmpl,
                widx, u0, inv_du, max_rel, ridge):
    npx_max = (gv_off[o + 1] - gv_off[o] if gv_pres[o] else 0) + (gi_off[o + 1] - gi_off[o] if gi_pres[o] else 0)
    px = np.empty(npx_max)
    pw = np.empty(npx_max)
    pwf = np.empty(npx_max)
    npx, n_gv, swff = _gather_pixels(o, gv_wave, gv_flux, gv_err, gv_off, gv_pres, gi_wave, gi_flux, gi_err,
                                     gi_off, gi_pres, max_rel, px, pw, pwf)
    nvec = tmpl.shape[3]
    A = np.empty((nvec, nvec))
    b = np.empty(nvec)
    t = np.empty(nvec)
    M = np.empty((nvec, max(npx, 1)))
    out = np.empty(s.size)
    for q in range(s.size):
        out[q] = _chi2_at(s[q], px, pw, pwf, n_gv, npx, swff, tmpl, widx, u0, inv_du, tmpl.shape[2], ridge, A, b, t, M)
    return out


# ----------------------------------------------------------------------------- intervals
@numba.njit(cache=True, nogil=True)
def _segment_mass(o_a, o_b, length, two_t):
    """Mass of exp(-o / 2T) over a segment where o runs linearly from o_a to o_b (o >= 0 at the minimum)."""
    lam = (o_b - o_a) / two_t
    if abs(lam) < 1e-9:
        return length * math.exp(-o_a / two_t)
    if lam > 0:
        return length * math.exp(-o_a / two_t) * (-math.expm1(-lam)) / lam
    return length * math.exp(-o_b / two_t) * (-math.expm1(lam)) / (-lam)


@numba.njit(cache=True, nogil=True)
def _segment_inverse(lam, r):
    """t in [0, 1] where the fraction ``r`` of the mass of exp(-lam t) over [0, 1] lies below t."""
    if abs(lam) < 1e-9:
        return r
    if lam > 0:
        return -math.log1p(r * math.expm1(-lam)) / lam
    return 1.0 - (-math.log1p((1.0 - r) * math.expm1(lam)) / (-lam))


@numba.njit(cache=True, nogil=True)
def _interval_one(o, pz, x0, dx, zspace, s_pts, obj_pts, win_pts, n_pts, win_lo, win_hi, win_mass, n_win,
                  temperature, qs, out):
    nb = pz.shape[1]
    row = pz[o]
    for i in range(nb):
        if not np.isfinite(row[i]):
            for q in range(qs.size):
                out[o, q] = np.nan
            return
    nw = n_win[o]
    cap = nb + 2 * nw + n_pts[o] + 4
    sa = np.empty(cap)
    sb = np.empty(cap)
    lam = np.empty(cap)
    mass = np.empty(cap)
    ns = 0
    two_t = 2.0 * temperature[o]
    k = 0                   # next window to emit
    cur = -np.inf           # everything below cur has been emitted
    for i in range(nb + 1):
        if i < nb:
            xa = x0 + (i - 0.5) * dx
            xb = xa + dx
            if zspace:
                if xb <= -1.0:
                    continue
                a = math.log1p(max(xa, -1.0 + 1e-12))
                b = math.log1p(xb)
            else:
                a = xa
                b = xb
            p = row[i]
        else:
            a = np.inf
            b = np.inf
            p = 0.0
        start = max(a, cur)
        while k < nw and win_lo[o, k] < b:
            if win_lo[o, k] > start and p > 0 and i < nb:
                xs = math.expm1(start) if zspace else start
                xe = math.expm1(win_lo[o, k]) if zspace else win_lo[o, k]
                sa[ns] = start
                sb[ns] = win_lo[o, k]
                lam[ns] = 0.0
                mass[ns] = p * (xe - xs) / dx
                ns += 1
            # the window's shape over its scanned points
            first = -1
            last = -1
            omin = np.inf
            for q in range(n_pts[o]):
                if win_pts[o, q] == k:
                    if first < 0:
                        first = q
                    last = q
                    omin = min(omin, obj_pts[o, q])
            m0 = ns
            if first < 0:
                sa[ns] = win_lo[o, k]
                sb[ns] = win_hi[o, k]
                lam[ns] = 0.0
                mass[ns] = 1.0
                ns += 1
            else:
                if s_pts[o, first] > win_lo[o, k]:
                    sa[ns] = win_lo[o, k]
                    sb[ns] = s_pts[o, first]
                    lam[ns] = 0.0
                    mass[ns] = _segment_mass(obj_pts[o, first] - omin, obj_pts[o, first] - omin,
                                             sb[ns] - sa[ns], two_t)
                    ns += 1
                if first == last:
                    sa[ns] = s_pts[o, first]
                    sb[ns] = s_pts[o, first]
                    lam[ns] = 0.0
                    mass[ns] = 1.0
                    ns += 1
                for q in range(first, last):
                    oa = obj_pts[o, q] - omin
                    ob = obj_pts[o, q + 1] - omin
                    sa[ns] = s_pts[o, q]
                    sb[ns] = s_pts[o, q + 1]
                    lam[ns] = (ob - oa) / two_t
                    mass[ns] = _segment_mass(oa, ob, sb[ns] - sa[ns], two_t)
                    ns += 1
                if s_pts[o, last] < win_hi[o, k]:
                    sa[ns] = s_pts[o, last]
                    sb[ns] = win_hi[o, k]
                    lam[ns] = 0.0
                    mass[ns] = _segment_mass(obj_pts[o, last] - omin, obj_pts[o, last] - omin,
                                             sb[ns] - sa[ns], two_t)
                    ns += 1
            tot = 0.0
            for q in range(m0, ns):
                tot += mass[q]
            for q in range(m0, ns):
                mass[q] = win_mass[o, k] * mass[q] / tot if tot > 0 else 0.0
            if tot <= 0 and ns > m0:
                mass[m0] = win_mass[o, k]
            start = max(start, win_hi[o, k])
            cur = max(cur, win_hi[o, k])
            k += 1
        if i < nb and p > 0 and b > start:
            xs = math.expm1(start) if zspace else start
            xe = xb
            sa[ns] = start
            sb[ns] = b
            lam[ns] = 0.0
            mass[ns] = p * (xe - xs) / dx
            ns += 1
        if i < nb:
            cur = max(cur, b)
    total = 0.0
    for q in range(ns):
        total += mass[q]
    for j in range(qs.size):
        if not total > 0:
            out[o, j] = np.nan
            continue
        target = qs[j] * total
        acc = 0.0
        val = np.nan
        for q in range(ns):
            if mass[q] <= 0:
                continue
            if acc + mass[q] >= target:
                r = (target - acc) / mass[q]
                r = min(1.0, max(0.0, r))
                val = sa[q] + _segment_inverse(lam[q], r) * (sb[q] - sa[q])
                break
            acc += mass[q]
        if not np.isfinite(val):          # rounding left the target past the last segment
            for q in range(ns - 1, -1, -1):
                if mass[q] > 0:
                    val = sb[q]
                    break
        out[o, j] = math.expm1(val)


@numba.njit(cache=True, nogil=True)
def _intervals_kernel(pz, x0, dx, zspace, s_pts, obj_pts, win_pts, n_pts, win_lo, win_hi, win_mass, n_win,
                      temperature, qs, out):
    for o in range(pz.shape[0]):
        _interval_one(o, pz, x0, dx, zspace, s_pts, obj_pts, win_pts, n_pts, win_lo, win_hi, win_mass, n_win,
                      temperature, qs, out)


def quantiles(refinement_or_posterior, q, temperature: float | None = None) -> np.ndarray:
    """(n, len(q)) redshift quantiles of each object's posterior at ``temperature`` (default: the
    model's). NaN where the object has no p(z)."""
    post = getattr(refinement_or_posterior, "posterior", refinement_or_posterior)
    n = len(post)
    t = np.asarray(post.temperature if temperature is None else temperature, dtype=np.float64)
    if t.ndim > 1 or (t.ndim == 1 and t.size != n) or not np.all(np.isfinite(t) & (t > 0)):
        raise ValueError(f"the temperature must be a positive number or one per object, not {temperature}")
    t = np.ascontiguousarray(np.broadcast_to(t, (n,)))
    qs = np.ascontiguousarray(q, dtype=np.float64).ravel()
    out = np.full((n, qs.size), np.nan)
    if n:
        _intervals_kernel(post.pz, float(post.grid.z0), float(post.grid.dz), post.grid.space == "z",
                          np.ascontiguousarray(post.s, dtype=np.float64), post.obj.astype(np.float64), post.window,
                          post.n_points,
                          post.win_lo, post.win_hi, post.win_mass, post.n_windows, t, qs, out)
    return out


def intervals(refinement_or_posterior, temperature: float | None = None, levels=(0.68, 0.95)) -> dict:
    """Central intervals of each object's posterior at ``temperature`` (default: the model's).

    Returns float64 arrays (n,): for the first level ``Z_LO``, ``Z_HI`` and ``ZERR`` (half the
    interval's width); for every level L, ``Z_LO{100 L}`` and ``Z_HI{100 L}`` (e.g. Z_LO95). An
    object the refinement did not run on gets the intervals of the network's p(z); one with no
    p(z) gets NaN.
    """
    levels = tuple(float(v) for v in levels)
    if not levels or not all(0 < v < 1 for v in levels):
        raise ValueError(f"levels must lie in (0, 1), not {levels}")
    qs = []
    for v in levels:
        qs += [0.5 - v / 2, 0.5 + v / 2]
    zq = quantiles(refinement_or_posterior, qs, temperature)
    out = {}
    for k, v in enumerate(levels):
        tag = f"{100 * v:g}".replace(".", "_")
        out[f"Z_LO{tag}"] = zq[:, 2 * k]
        out[f"Z_HI{tag}"] = zq[:, 2 * k + 1]
    out["Z_LO"] = zq[:, 0]
    out["Z_HI"] = zq[:, 1]
    out["ZERR"] = 0.5 * (zq[:, 1] - zq[:, 0])
    return out
