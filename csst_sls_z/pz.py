"""p(z) per object on a fixed grid, and its second solution (docs/pz.md).

The grid is the network's own: the ``n_bins`` bins of its configuration, equal in z or in
ln(1 + z) (``NetworkConfig.bin_space``). :class:`PzGrid` describes it and writes the header
keywords (``datamodel.KW_PZ_*``): bin i is centred on x_i = PZ_Z0 + i * PZ_DZ in the variable
PZ_SPACE (``'z'``, or ``'ln1pz'`` for x = ln(1 + z)), and PZ[i] is the probability in that bin.

Where p(z) comes from (:class:`PzMaker`, built once per reference set):

* a ``zbins`` set: the backbone's softmax over its bins, divided by the temperature fitted on
  the validation set when the calibration file holds one (``PZMETH = 'temperature'``), else the
  raw softmax (an older set: the header says ``PZ_CALIB = F``, ``PZ_METH = 'none'``);
* a ``logcosh`` set (one number per object, no bins): the calibrated Gaussian of the BNN head,
  the distribution Z, Z_LO and Z_HI are read from (Beta or scale calibration, as ``CALMETH``),
  integrated over each bin of the same grid.

Rows are normalised to sum to 1 over the grid (probability off the grid is dropped and the rest
renormalised). The column is float32 (:func:`rows_float32` puts the rounding residual on the
largest bin, so a row sums to 1 within a float32 ulp).

The second solution (:func:`alternative_peaks`): the peaks of p(z) are its local maxima that
stand out, i.e. whose topographic prominence (height above the highest saddle that leads to
higher ground) is at least ``PEAK_PROMINENCE`` of their height; the highest mode is always a
peak. Neighbouring peaks are split at the lowest bin between them (the bin goes to the lower-z
peak), so every bin belongs to one peak and the peaks' probabilities sum to 1. Z_ALT is the
second-highest peak (by height) holding at least ``PEAK_MIN_PROBABILITY``, refined like Z_CNN by
the probability-weighted mean of the bins within ``ZALT_HALF_WINDOW`` of its mode (inside its
peak); P_ALT is the probability in its peak. With no such peak Z_ALT is NaN and P_ALT is 0.
These constants define the columns (as ``objectives.ZBINS_HALF_WINDOW`` defines Z_CNN); the
number that sets a ZWARN bit, the P_ALT above which MULTIPLE_PEAKS is set, is in the
thresholds reference file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from . import datamodel as dm

PEAK_PROMINENCE = 0.5          # a local maximum is a peak if its prominence is >= this x its height
PEAK_MIN_PROBABILITY = 1e-3    # Z_ALT: the second peak must hold at least this probability
ZALT_HALF_WINDOW = 3           # Z_ALT: mean of the mode's bin and 3 bins each side, within its peak


# ----------------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class PzGrid:
    """``nbin`` bins of width ``dz`` in ``space`` ('z' or 'ln1pz'), the first centred on ``z0``."""
    z0: float
    dz: float
    nbin: int
    space: str = "z"

    def __post_init__(self):
        if self.space not in dm.PZ_SPACES:
            raise ValueError(f"p(z) grid space must be one of {dm.PZ_SPACES}, not {self.space!r}")
        if not (self.nbin >= 1 and self.dz > 0 and math.isfinite(self.z0)):
            raise ValueError(f"p(z) grid needs nbin >= 1 and dz > 0, got {self}")

    @classmethod
    def from_config(cls, cfg) -> "PzGrid":
        """The bins of a network configuration (``network.config.NetworkConfig``)."""
        lo, _ = cfg.bin_range
        return cls(z0=float(lo + 0.5 * cfg.bin_width), dz=float(cfg.bin_width), nbin=int(cfg.n_bins),
                   space=str(cfg.bin_space))

    def coordinates(self) -> np.ndarray:
        """Bin centres in ``space``."""
        return self.z0 + self.dz * np.arange(self.nbin)

    def _to_z(self, x):
        return np.expm1(x) if self.space == "ln1pz" else np.asarray(x, dtype=float)

    def _from_z(self, z):
        z = np.asarray(z, dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.log1p(z) if self.space == "ln1pz" else z

    def centres(self) -> np.ndarray:
        """Bin centres in z."""
        return self._to_z(self.coordinates())

    def edges(self) -> np.ndarray:
        """The nbin + 1 bin edges in z."""
        return self._to_z(self.z0 + self.dz * (np.arange(self.nbin + 1) - 0.5))

    def bin_index(self, z) -> np.ndarray:
        """The bin holding each z (int64); -1 off the grid or for a non-finite z."""
        x = (self._from_z(z) - (self.z0 - 0.5 * self.dz)) / self.dz
        ok = np.isfinite(x) & (x >= 0) & (x < self.nbin)
        return np.where(ok, np.floor(np.where(ok, x, 0.0)), -1).astype(np.int64)

    def cards(self) -> list[tuple[str, object, str]]:
        space = "ln(1+z)" if self.space == "ln1pz" else "z"
        return [(dm.KW_PZ_SPACE, self.space, "PZ grid variable x: z, or ln1pz = ln(1+z)"),
                (dm.KW_PZ_Z0, self.z0, f"PZ bin 0 centre, in {space}"),
                (dm.KW_PZ_DZ, self.dz, f"PZ bin width, in {space}"),
                (dm.KW_PZ_NBIN, self.nbin, "PZ bins; bin i centred on PZ_Z0 + i*PZ_DZ")]

    @classmethod
    def from_header(cls, header) -> "PzGrid":
        """The grid an output's header describes (KeyError when it has none)."""
        return cls(z0=float(header[dm.KW_PZ_Z0]), dz=float(header[dm.KW_PZ_DZ]), nbin=int(header[dm.KW_PZ_NBIN]),
                   space=str(header.get(dm.KW_PZ_SPACE, "z")).strip())


# ----------------------------------------------------------------------------- rows
def normalise_rows(p) -> np.ndarray:
    """Rows of ``p`` (float64) scaled to sum to 1; a row with a non-finite value or no probability
    becomes NaN (the object was not measured)."""
    p = np.array(p, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.sum(p, axis=1, keepdims=True)
        bad = ~(np.isfinite(total) & (total > 0)) | ~np.all(np.isfinite(p), axis=1, keepdims=True)
        p = p / np.where(bad, 1.0, total)
    p[bad[:, 0]] = np.nan
    return p


def rows_float32(p) -> np.ndarray:
    """float32 copy of normalised rows, the rounding residual put on each row's largest bin so that
    the row still sums to 1 (within a float32 ulp of that bin); NaN rows stay NaN."""
    p = np.asarray(p, dtype=np.float64)
    out = p.astype(np.float32)
    if out.size == 0:
        return out
    residual = 1.0 - np.sum(out, axis=1, dtype=np.float64)
    ok = np.isfinite(residual)
    rows = np.nonzero(ok)[0]
    top = np.argmax(np.where(ok[:, None], out, -np.inf), axis=1)[ok]
    out[rows, top] = (out[rows, top].astype(np.float64) + residual[ok]).astype(np.float32)
    return out


def gaussian_pz(grid: PzGrid, calibration, mean, sigma) -> np.ndarray:
    """(N, nbin) probabilities of the calibrated Gaussian predictive distribution in each bin
    (``calibration``: a ``BetaCalibration`` or ``ScaleCalibration``, anything with ``cdf``),
    renormalised over the grid. An object whose whole distribution falls off the grid gets all
    its probability in the bin nearest its mean."""
    mean = np.asarray(mean, dtype=np.float64).ravel()
    sigma = np.asarray(sigma, dtype=np.float64).ravel()
    cdf = calibration.cdf(mean[:, None], sigma[:, None], grid.edges()[None, :])
    p = np.diff(cdf, axis=1)
    with np.errstate(invalid="ignore"):
        empty = np.isfinite(mean) & np.isfinite(sigma) & ~(np.nansum(p, axis=1) > 0)
    if empty.any():
        idx = np.clip(grid.bin_index(np.clip(mean[empty], grid.edges()[0], grid.edges()[-1])), 0, grid.nbin - 1)
        idx = np.where(mean[empty] >= grid.edges()[-1], grid.nbin - 1, idx)
        p[empty] = 0.0
        p[np.nonzero(empty)[0], idx] = 1.0
    return normalise_rows(p)


# ----------------------------------------------------------------------------- the second solution
@numba.njit(cache=True, nogil=True)
def _alt_peaks_kernel(p, centres, prominence, min_probability, half_window, z_alt, p_alt):
    n, nb = p.shape
    mode_lo = np.empty(nb, np.int64)     # each local maximum's plateau: first bin
    mode_hi = np.empty(nb, np.int64)     # and last bin
    peaks = np.empty(nb, np.int64)       # each peak's mode bin (its plateau's middle), by position
    for r in range(n):
        row = p[r]
        finite = True
        for j in range(nb):
            if not np.isfinite(row[j]):
                finite = False
                break
        if not finite:
            z_alt[r] = np.nan
            p_alt[r] = np.nan
            continue
        # Local maxima; a plateau counts once.
        nm = 0
        j = 0
        while j < nb:
            k = j
            while k + 1 < nb and row[k + 1] == row[j]:
                k += 1
            if (j == 0 or row[j - 1] < row[j]) and (k == nb - 1 or row[k + 1] < row[j]):
                mode_lo[nm] = j
                mode_hi[nm] = k
                nm += 1
            j = k + 1
        tm = 0                           # the highest mode (the first of equal ones)
        for m in range(1, nm):
            if row[mode_lo[m]] > row[mode_lo[tm]]:
                tm = m
        # Peaks: the highest mode, and every mode whose prominence is >= `prominence` x its height.
        # A mode other than the highest has ground at least as high on one side at least, so the
        # saddle (the highest of the lowest points on the way to such ground) is always found.
        npk = 0
        top_peak = -1
        for m in range(nm):
            h = row[mode_lo[m]]
            centre = (mode_lo[m] + mode_hi[m]) // 2
            if m == tm:
                top_peak = npk
                peaks[npk] = centre
                npk += 1
                continue
            if h <= 0.0:
                continue
            saddle = 0.0
            lo = h
            for q in range(mode_lo[m] - 1, -1, -1):
                if row[q] >= h:
                    saddle = lo
                    break
                if row[q] < lo:
                    lo = row[q]
            lo = h
            for q in range(mode_hi[m] + 1, nb):
                if row[q] >= h:
                    if lo > saddle:
                        saddle = lo
                    break
                if row[q] < lo:
                    lo = row[q]
            if h - saddle >= prominence * h:
                peaks[npk] = centre
                npk += 1
        # Neighbouring peaks split at the lowest bin between them (it goes to the lower-z peak);
        # the second solution is the highest peak but the top one that holds min_probability.
        best = -1
        best_h = -1.0
        best_lo = 0
        best_hi = 0
        best_mass = 0.0
        start = 0
        for a in range(npk):
            i = peaks[a]
            end = nb - 1
            if a + 1 < npk:
                end = i
                for q in range(i, peaks[a + 1] + 1):
                    if row[q] < row[end]:
                        end = q
            if a != top_peak:
                mass = 0.0
                for q in range(start, end + 1):
                    mass += row[q]
                if mass >= min_probability and row[i] > best_h:
                    best = i
                    best_h = row[i]
                    best_lo = start
                    best_hi = end
                    best_mass = mass
            start = end + 1
        if best < 0:
            z_alt[r] = np.nan
            p_alt[r] = 0.0
            continue
        s = 0.0
        sz = 0.0
        for q in range(max(best - half_window, best_lo), min(best + half_window, best_hi) + 1):
            s += row[q]
            sz += row[q] * centres[q]
        z_alt[r] = sz / s if s > 0.0 else centres[best]
        p_alt[r] = best_mass


def alternative_peaks(p, grid: PzGrid, prominence: float = PEAK_PROMINENCE,
                      min_probability: float = PEAK_MIN_PROBABILITY,
                      half_window: int = ZALT_HALF_WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """(Z_ALT, P_ALT) of each row of ``p`` (normalised p(z) on ``grid``), float64 (module doc).

    NaN rows give NaN, NaN; a row with one peak gives NaN, 0."""
    p = np.ascontiguousarray(p, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != grid.nbin:
        raise ValueError(f"p(z) rows must have {grid.nbin} bins, got shape {p.shape}")
    z_alt = np.empty(p.shape[0])
    p_alt = np.empty(p.shape[0])
    if p.shape[0]:
        _alt_peaks_kernel(p, np.ascontiguousarray(grid.centres(), dtype=np.float64), float(prominence),
                          float(min_probability), int(half_window), z_alt, p_alt)
    return z_alt, p_alt


# ----------------------------------------------------------------------------- one reference set
@dataclass(frozen=True)
class PzMaker:
    """How one reference set makes p(z): its grid, its source and its calibration (module doc).

    binned: the backbone's objective is over the grid's bins (``zbins``); else (``logcosh``) p(z)
    is the calibrated Gaussian. calibration_file: the set's ``reffiles.tables.CalibrationFile``.
    """
    grid: PzGrid
    binned: bool
    calibration_file: object

    @property
    def kind(self) -> str:
        return "SOFTMAX" if self.binned else "GAUSSIAN"

    @property
    def temperature(self):
        """The fitted ``TemperatureCalibration``, or None (raw softmax, or a Gaussian p(z))."""
        return getattr(self.calibration_file, "pz", None) if self.binned else None

    @property
    def calibrated(self) -> bool:
        return self.temperature is not None or not self.binned

    @property
    def method(self) -> str:
        if not self.binned:
            return str(self.calibration_file.method)
        return self.temperature.method if self.temperature is not None else "none"

    def __call__(self, output=None, mean=None, sigma=None) -> np.ndarray:
        """(N, nbin) float64 rows summing to 1: from the backbone ``output`` (logits) of a binned
        set, or from the BNN ``mean`` and ``sigma`` of a logcosh set."""
        if self.binned:
            from .calibration import TemperatureCalibration
            if output is None:
                raise ValueError("a binned objective's p(z) needs the backbone output")
            output = np.asarray(output)
            if output.ndim != 2 or output.shape[1] != self.grid.nbin:
                raise ValueError(f"backbone output has shape {output.shape}, not (N, {self.grid.nbin})")
            return normalise_rows((self.temperature or TemperatureCalibration.IDENTITY).probabilities(output))
        return gaussian_pz(self.grid, self.calibration_file.applied, mean, sigma)

    def cards(self, column: bool = True) -> list[tuple[str, object, str]]:
        """The SLS_REDSHIFT keywords describing p(z): the grid, its source, its calibration."""
        how = {"SOFTMAX": "backbone softmax over its bins", "GAUSSIAN": "calibrated BNN Gaussian in each bin"}
        cards = self.grid.cards() + [
            (dm.KW_PZ_KIND, self.kind, how[self.kind]),
            (dm.KW_PZ_CALIBRATED, self.calibrated, "p(z) calibrated on the validation set"),
            (dm.KW_PZ_METHOD, self.method, "p(z) calibration: temperature[+pit]/beta/scale/none")]
        if self.temperature is not None:
            cards.append((dm.KW_PZ_TEMPERATURE, float(self.temperature.temperature), "softmax(logits / PZ_TEMP)"))
        cards.append((dm.KW_PZ_COLUMN, bool(column), "PZ column written (F: --no-pz)"))
        return cards
