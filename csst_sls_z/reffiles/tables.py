"""The small reference files: network grid, calibration and ZWARN thresholds.

Each is a FITS file with the standard reference header (``reffile.reference_header``);
their values sit in header keywords or small tables so a person can read them with any
FITS viewer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from ..calibration import BetaCalibration, ScaleCalibration, TemperatureCalibration
from ..datamodel import REQUIRED, THRESHOLD_KEYWORDS
from ..preprocess import WaveGrid
from .header import ReferenceFileError, open_reference_file, reference_header, write_fits_atomic


def write_wavegrid(path, grid: WaveGrid, pedigree: str, history=(), overwrite=False):
    hdr = reference_header("wavegrid", pedigree, "network input wavelength grid, GV then GI", history=list(history) + [
        "Input convention: ch0 = FLUX/scale, ch1 = ERR/scale, scale = median ERR of valid",
        "pixels on this grid over both bands; masked pixels are 0 in both channels."])
    hdr["NORMCONV"] = ("median_valid_err", "per-object normalisation")
    hdr["MASKVAL"] = (0.0, "value of masked pixels in both channels")
    hdr["MINCOVER"] = (grid.min_cover, "valid input needed over this fraction of a pixel")
    hdr["MAXRELER"] = (grid.max_rel_err, "mask pixels with ERR above this x median ERR")
    tab = fits.BinTableHDU.from_columns([
        fits.Column("BAND", "2A", array=list(grid.bands)),
        fits.Column("START", "D", unit="Angstrom", array=list(grid.starts)),
        fits.Column("STEP", "D", unit="Angstrom", array=list(grid.steps)),
        fits.Column("NPIX", "J", array=list(grid.sizes))], name="GRID")
    write_fits_atomic(fits.HDUList([fits.PrimaryHDU(header=hdr), tab]), path, overwrite=overwrite)


# Values a wavegrid file holds since a later version, by the file's SCHEMAV: what a file of that
# schema version written before the value was stored in it implies (WaveGrid's defaults, the
# values in use then).
WAVEGRID_SCHEMA_DEFAULTS = {1: {"MINCOVER": WaveGrid.min_cover, "MAXRELER": WaveGrid.max_rel_err}}


def load_wavegrid(path) -> WaveGrid:
    with open_reference_file(path, "wavegrid") as hdul:
        t = hdul["GRID"].data
        h = hdul[0].header
        try:
            numbers = {"min_cover": float(_value_or_schema_default(h, "MINCOVER", WAVEGRID_SCHEMA_DEFAULTS)),
                       "max_rel_err": float(_value_or_schema_default(h, "MAXRELER", WAVEGRID_SCHEMA_DEFAULTS))}
        except KeyError as exc:
            raise ReferenceFileError(f"wavegrid file {path} lacks {exc}") from None
        grid = WaveGrid(starts=tuple(float(v) for v in t["START"]), steps=tuple(float(v) for v in t["STEP"]),
                        sizes=tuple(int(v) for v in t["NPIX"]), bands=tuple(str(b).strip() for b in t["BAND"]),
                        **numbers)
    if grid.bands != ("GV", "GI") or min(grid.sizes) <= 0:
        raise ReferenceFileError(f"wavegrid file {path} must hold positive GV then GI grids")
    if not (0 < grid.min_cover <= 1 and grid.max_rel_err > 0):
        raise ReferenceFileError(f"wavegrid file {path} has MINCOVER = {grid.min_cover} (must be in (0, 1]) "
                                 f"or MAXRELER = {grid.max_rel_err} (must be > 0)")
    return grid


def grid_from_instrument(instrument) -> WaveGrid:
    return WaveGrid(starts=(instrument["GV"].wmin, instrument["GI"].wmin),
                    steps=(instrument["GV"].dispersion, instrument["GI"].dispersion),
                    sizes=(instrument["GV"].wavelength.size, instrument["GI"].wavelength.size))


@dataclass(frozen=True)
class CalibrationFile:
    beta: BetaCalibration
    scale: ScaleCalibration
    method: str                    # which one the stage applies: "beta" or "scale"
    # The calibration of the binned p(z) (docs/pz.md): None where the file holds none
    # (PZMETH 'none', and every file written before it existed): the stage then writes the raw
    # softmax and says so in the header (PZ_CALIB = F).
    pz: TemperatureCalibration | None = None

    @property
    def applied(self):
        """The Gaussian calibration this file's ``method`` names: what the stage and evaluation apply."""
        return self.beta if self.method == "beta" else self.scale


PZ_CALIBRATION_METHODS = ("none", "temperature", "temperature+pit")

# Values a calibration file holds since a later version, by the file's SCHEMAV: what a file of that
# schema version written before the value was stored in it implies. PZMETH: no p(z) calibration.
CALIBRATION_SCHEMA_DEFAULTS = {1: {"PZMETH": "none"}}


def write_calibration(path, beta: BetaCalibration, scale: ScaleCalibration, pedigree: str, method="beta",
                      history=(), overwrite=False, pz: TemperatureCalibration | None = None):
    hdr = reference_header("calibration", pedigree, "Beta calibration of the BNN predictive distribution",
                           history=history)
    hdr["CALMETH"] = (method, "applied by the stage: beta or scale")
    hdr["BETA_A"] = (beta.a, "Beta calibration a (Kull et al. 2017)")
    hdr["BETA_B"] = (beta.b, "Beta calibration b")
    hdr["BETA_C"] = (beta.c, "Beta calibration c")
    hdr["BETA_S"] = (beta.scale, "width prescale applied before the Beta map")
    hdr["SCALEFAC"] = (scale.scale, "single scale factor on sigma (comparison)")
    hdr["PZMETH"] = (pz.method if pz is not None else "none", "p(z) calibration: " + ", ".join(PZ_CALIBRATION_METHODS))
    if pz is not None:
        hdr["PZTEMP"] = (pz.temperature, "p(z) = softmax(backbone logits / PZTEMP)")
    if pz is not None and pz.pit_knots is not None:
        hdr["PZPITN"] = (len(pz.pit_knots) - 1, "PIT map: K; PZPITkk = PIT quantile at level kk/K")
        for k, x in enumerate(pz.pit_knots):
            hdr[f"PZPIT{k:02d}"] = (x, f"PIT quantile at level {k}/{len(pz.pit_knots) - 1}")
    write_fits_atomic(fits.HDUList([fits.PrimaryHDU(header=hdr)]), path, overwrite=overwrite)


def load_calibration(path) -> CalibrationFile:
    with open_reference_file(path, "calibration") as hdul:
        h = hdul[0].header
        try:
            pz_method = str(_value_or_schema_default(h, "PZMETH", CALIBRATION_SCHEMA_DEFAULTS)).strip()
            if pz_method not in PZ_CALIBRATION_METHODS:
                raise ReferenceFileError(f"calibration file {path} has PZMETH = {pz_method!r}, not one of "
                                         f"{PZ_CALIBRATION_METHODS}")
            return CalibrationFile(beta=BetaCalibration(a=float(h["BETA_A"]), b=float(h["BETA_B"]), c=float(h["BETA_C"]),
                                                                 scale=float(h.get("BETA_S", 1.0))),
                                   scale=ScaleCalibration(scale=float(h["SCALEFAC"])), method=str(h["CALMETH"]),
                                   pz=TemperatureCalibration(
                                       float(h["PZTEMP"]),
                                       [float(h[f"PZPIT{k:02d}"]) for k in range(int(h["PZPITN"]) + 1)]
                                       if pz_method == "temperature+pit" else None)
                                   if pz_method.startswith("temperature") else None)
        except (KeyError, ValueError) as exc:
            raise ReferenceFileError(f"calibration file {path} lacks a value ({exc})") from None


# Values a thresholds file holds since a later version, by the file's SCHEMAV: what a file of
# that schema version written before the value was stored in it implies (datamodel.THRESHOLD_KEYWORDS).
THRESHOLDS_SCHEMA_DEFAULTS = {1: {k.keyword: k.schema1_default for k in THRESHOLD_KEYWORDS
                                  if k.schema1_default is not REQUIRED}}


class Thresholds:
    """The thresholds reference file: one value per ``datamodel.THRESHOLD_KEYWORDS`` entry, an
    attribute of that name (``th.low_snr``), plus the training features' mean and inverse
    covariance for OUT_OF_DISTRIBUTION. A value left out takes its schema-1 default; one
    without a default must be given. None disables its bit (``multiple_peaks``)."""

    def __init__(self, *, ood_mean, ood_precision, **values):
        known = {k.name for k in THRESHOLD_KEYWORDS}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"Thresholds has no value {', '.join(unknown)} (datamodel.THRESHOLD_KEYWORDS)")
        self.ood_mean = np.asarray(ood_mean)            # (F,) training feature mean
        self.ood_precision = np.asarray(ood_precision)  # (F, F) inverse covariance of training features
        for k in THRESHOLD_KEYWORDS:
            if k.name in values:
                value = values[k.name]
            elif k.schema1_default is not REQUIRED:
                value = k.schema1_default
            else:
                raise TypeError(f"Thresholds needs {k.name} ({k.keyword}: {k.comment})")
            setattr(self, k.name, None if value is None else float(value))

    def values(self) -> dict:
        """The threshold values by attribute name (the features apart)."""
        return {k.name: getattr(self, k.name) for k in THRESHOLD_KEYWORDS}

    def replace(self, **changes) -> "Thresholds":
        """A copy with some values changed."""
        return Thresholds(ood_mean=self.ood_mean, ood_precision=self.ood_precision, **{**self.values(), **changes})

    def __repr__(self) -> str:
        values = ", ".join(f"{k}={v!r}" for k, v in self.values().items())
        return f"Thresholds({values}, {self.ood_mean.size} features)"

    def ood_distance(self, feats: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of backbone features from the training set, per dimension."""
        d = feats - self.ood_mean[None, :]
        # (d @ P) row-wise dot d: a BLAS matmul, 20x faster than the three-operand einsum
        return np.sqrt(np.einsum("ij,ij->i", d @ self.ood_precision, d) / d.shape[1])


def write_thresholds(path, th: Thresholds, pedigree: str, history=(), overwrite=False):
    hdr = reference_header("thresholds", pedigree, "ZWARN thresholds chosen on the validation set", history=history)
    for k in THRESHOLD_KEYWORDS:
        value = getattr(th, k.name)
        if value is not None:              # absent: the bit is disabled
            hdr[k.keyword] = (float(value), k.comment)
    hdus = [fits.PrimaryHDU(header=hdr), fits.ImageHDU(th.ood_mean.astype(np.float64), name="OOD_MEAN"),
            fits.ImageHDU(th.ood_precision.astype(np.float64), name="OOD_PRECISION")]
    write_fits_atomic(fits.HDUList(hdus), path, overwrite=overwrite)


def _value_or_schema_default(h, key, defaults=THRESHOLDS_SCHEMA_DEFAULTS):
    """``h[key]``, else what a file of ``h``'s schema version written before ``key`` existed implies."""
    if key in h:
        return h[key]
    try:
        return defaults[h.get("SCHEMAV")][key]
    except (KeyError, TypeError):
        raise KeyError(key) from None


def load_thresholds(path) -> Thresholds:
    with open_reference_file(path, "thresholds") as hdul:
        h = hdul[0].header
        try:
            values = {}
            for k in THRESHOLD_KEYWORDS:
                value = _value_or_schema_default(h, k.keyword)
                values[k.name] = None if value is None else float(value)
            return Thresholds(ood_mean=np.array(hdul["OOD_MEAN"].data, float),
                              ood_precision=np.array(hdul["OOD_PRECISION"].data, float), **values)
        except KeyError as exc:
            raise ReferenceFileError(f"thresholds file {path} lacks {exc}") from None
