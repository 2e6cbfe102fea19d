"""The ``refinement`` reference file: every number of the template refinement (``csst_sls_z.refine``).

Layout (standard reference header: REFTYPE, PEDIGREE, AUTHOR, SCHEMAV, DESCRIP, HISTORY; FITS
checksums in every HDU):

* primary header: the scan, window, prior, peak-finder, pixel and posterior numbers (keywords in
  :data:`KEYWORDS`), the posterior temperature by GI SNR where fitted (``TSNRN`` edges ``TSNRE01``...,
  ``TSNRN + 1`` temperatures ``TEMPB01``...; absent: ``TEMPER`` for every object), the libraries the basis came from (``NLIBS``, ``LIB01``...) and the basis's own
  resolution (``BASISR``);
* ``BASIS``: (n_vectors, n_grid) float64 image, the orthonormal rest-frame vectors;
* ``LOGLAM``: (n_grid,) float64 image, the uniform rest grid they are sampled on, ln(lambda/Angstrom)
  (its first value and step also as keywords LOGLAM0, DLOGLAM, for a reader);
* ``BANDS``: table BAND, RESOLUT (R), DISP (Angstrom/pixel), CENTRE (Angstrom);
* ``WIDTHS``: table WIDTH (self-broadening FWHM trials, pixels), in order (COARSEW indexes it).

:func:`load_refinement` checks the file's type, schema and checksums, then every number (shapes,
finite, positive steps, ...); any problem is a one-sentence :class:`ReferenceFileError`.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..refine import BANDS, RefinementModel
from .header import ReferenceFileError, open_reference_file, reference_header, verify_reference_file, write_fits_atomic

# field -> (header keyword, type, comment)
KEYWORDS = {
    "coarse_width": ("COARSEW", int, "index into WIDTHS of the coarse scan; -1 all"),
    "window_half": ("WINHALF", float, "window half-width around Z and peaks, ln(1+z)"),
    "coarse_step": ("CSTEP", float, "coarse scan step, ln(1+z)"),
    "coarse_bin": ("CBIN", int, "adjacent pixels binned for the coarse scan"),
    "fine_step": ("FSTEP", float, "fine scan step, ln(1+z)"),
    "fine_half": ("FHALF", float, "fine scan half-width, ln(1+z)"),
    "parabola_steps": ("PARSTEPS", int, "parabola vertices evaluated after a fine scan"),
    "n_minima": ("NMINIMA", int, "coarse minima re-examined"),
    "minimum_margin": ("MINMARG", float, "... within this objective of the best one"),
    "profile_minima": ("PROFMIN", int, "minima where the widths are profiled"),
    "profile_rounds": ("PROFROUN", int, "width profiles per minimum (then rescans)"),
    "prior_weight": ("PRIORW", float, "objective = chi2 - 2 PRIORW ln PZ"),
    "pz_floor": ("PZFLOOR", float, "PZ floored at this fraction of its maximum"),
    "peak_smooth": ("PKSMOOTH", int, "PZ smoothed over this many bins for peaks"),
    "peak_mass_half": ("PKMASSHW", int, "peak probability: PZ within +- this many bins"),
    "peak_min_prob": ("PKMINP", float, "a peak is kept when its probability >= this"),
    "peak_min_sep": ("PKMINSEP", int, "and it is > this many bins from a kept one"),
    "n_peaks": ("NPEAKS", int, "peaks given a window besides Z"),
    "max_rel_err": ("MAXRELER", float, "pixels with ERR >= this x median ERR unused"),
    "ridge": ("RIDGE", float, "relative ridge on the normal equations"),
    "temperature": ("TEMPER", float, "posterior temperature (1: uncalibrated)"),
    "basis_r": ("BASISR", float, "basis resolution: FWHM = lambda/BASISR"),
}


def write_refinement(path, model: RefinementModel, pedigree: str, history=(), overwrite: bool = False) -> Path:
    """Write ``model`` as a refinement reference file (atomically, with checksums)."""
    problem = model.problem()
    if problem:
        raise ValueError(f"refusing to write an invalid refinement model: {problem}")
    hdr = reference_header("refinement", pedigree, "template refinement of the network redshift",
                           history=list(history) + [
                               f"Basis: {model.n_vectors} orthonormal rest-frame vectors from",
                               f"  {', '.join(model.libraries)}.",
                               "Method: csst_sls_z.refine: chi2 in windows around the peaks of",
                               "  the network's p(z), times that p(z)."])
    for name, (key, kind, comment) in KEYWORDS.items():
        value = getattr(model, name)
        hdr[key] = (int(value) if kind is int else float(value), comment)
    if model.temperature_snr_edges:
        hdr["TSNRN"] = (len(model.temperature_snr_edges), "GI SNR edges of the temperature bins")
        for k, edge in enumerate(model.temperature_snr_edges, start=1):
            hdr[f"TSNRE{k:02d}"] = (float(edge), "GI SNR edge of the temperature bins")
        for k, value in enumerate(model.temperatures_by_snr, start=1):
            hdr[f"TEMPB{k:02d}"] = (float(value), f"posterior temperature, GI SNR bin {k}")
    hdr["NLIBS"] = (len(model.libraries), "libraries the basis vectors came from")
    for k, lib in enumerate(model.libraries, start=1):
        hdr[f"LIB{k:02d}"] = (str(lib), "basis source library")
    basis = fits.ImageHDU(np.ascontiguousarray(model.basis, dtype=np.float64), name="BASIS")
    basis.header["BUNIT"] = ("", "orthonormal rows (F_lambda shapes)")
    loglam = fits.ImageHDU(np.ascontiguousarray(model.loglam, dtype=np.float64), name="LOGLAM")
    loglam.header["LOGLAM0"] = (model.loglam0, "ln(lambda/Angstrom) of grid point 0")
    loglam.header["DLOGLAM"] = (model.dloglam, "grid step in ln(lambda)")
    bands = fits.BinTableHDU.from_columns([
        fits.Column("BAND", "2A", array=list(model.bands)),
        fits.Column("RESOLUT", "D", array=list(model.resolution)),
        fits.Column("DISP", "D", unit="Angstrom/pixel", array=list(model.dispersion)),
        fits.Column("CENTRE", "D", unit="Angstrom", array=list(model.centre))], name="BANDS")
    widths = fits.BinTableHDU.from_columns([fits.Column("WIDTH", "D", unit="pixel", array=list(model.widths))],
                                           name="WIDTHS")
    return write_fits_atomic(fits.HDUList([fits.PrimaryHDU(header=hdr), basis, loglam, bands, widths]), path,
                             overwrite=overwrite)


def _number(h, key, kind, path):
    if key not in h:
        raise ReferenceFileError(f"refinement file {path} lacks the keyword {key}")
    value = h[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReferenceFileError(f"refinement file {path} has {key} = {value!r}, not a number")
    if kind is int:
        if float(value) != int(value):
            raise ReferenceFileError(f"refinement file {path} has {key} = {value!r}, not an integer")
        return int(value)
    value = float(value)
    if not math.isfinite(value):
        raise ReferenceFileError(f"refinement file {path} has {key} = {value}, not a finite number")
    return value


def load_refinement(path) -> RefinementModel:
    """The :class:`RefinementModel` a refinement reference file holds (checked; module doc)."""
    path = Path(path)
    verify_reference_file(path, "refinement")          # type, schema, checksums of every HDU
    with open_reference_file(path, "refinement") as hdul:
        h = hdul[0].header
        numbers = {name: _number(h, key, kind, path) for name, (key, kind, _c) in KEYWORDS.items()}
        # The temperature by GI SNR: absent from files written before it (one TEMPER for all).
        n_edges = _number(h, "TSNRN", int, path) if "TSNRN" in h else 0
        snr_edges = tuple(_number(h, f"TSNRE{k:02d}", float, path) for k in range(1, n_edges + 1))
        temps_by_snr = tuple(_number(h, f"TEMPB{k:02d}", float, path) for k in range(1, n_edges + 2)) if n_edges else ()
        n_libs = _number(h, "NLIBS", int, path)
        libraries = []
        for k in range(1, n_libs + 1):
            if f"LIB{k:02d}" not in h:
                raise ReferenceFileError(f"refinement file {path} lacks the keyword LIB{k:02d}")
            libraries.append(str(h[f"LIB{k:02d}"]).strip())
        try:
            bhdu, lhdu, btab, wtab = hdul["BASIS"], hdul["LOGLAM"], hdul["BANDS"].data, hdul["WIDTHS"].data
            basis = np.array(bhdu.data, dtype=np.float64) if bhdu.data is not None else np.zeros((0, 0))
            loglam = np.array(lhdu.data, dtype=np.float64).ravel() if lhdu.data is not None else np.zeros(0)
            bands = tuple(str(b).strip() for b in btab["BAND"])
            resolution = tuple(float(v) for v in btab["RESOLUT"])
            dispersion = tuple(float(v) for v in btab["DISP"])
            centre = tuple(float(v) for v in btab["CENTRE"])
            widths = tuple(float(v) for v in wtab["WIDTH"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ReferenceFileError(f"refinement file {path} lacks a table or column "
                                     f"({' '.join(str(exc).split())})") from None
    if bands != BANDS:
        raise ReferenceFileError(f"refinement file {path} must describe the bands {', '.join(BANDS)} in that "
                                 f"order, not {', '.join(bands) or 'none'}")
    try:
        return RefinementModel(basis=basis, loglam=loglam, libraries=tuple(libraries),
                               bands=bands, resolution=resolution, dispersion=dispersion, centre=centre,
                               widths=widths, temperature_snr_edges=snr_edges,
                               temperatures_by_snr=temps_by_snr, **numbers)
    except ValueError as exc:
        reason = str(exc).removeprefix("invalid refinement model: ")
        field = reason.split(" ", 1)[0]
        where = {"basis": "HDU BASIS", "the": "HDUs BASIS and LOGLAM", "resolution": "table BANDS",
                 "dispersion": "table BANDS", "centre": "table BANDS", "widths": "table WIDTHS",
                 "temperatures_by_snr": "keywords TSNRE.. and TEMPB..",
                 "temperature_snr_edges": "keywords TSNRE.."}.get(field)
        if field in KEYWORDS:
            where = f"keyword {KEYWORDS[field][0]}"
        raise ReferenceFileError(f"refinement file {path} is invalid: {reason}"
                                 + (f" ({where})" if where else "")) from None
