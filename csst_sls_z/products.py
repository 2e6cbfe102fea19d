"""Reading extracted 1D slitless spectra and writing the SLS_REDSHIFT product.

The file contract is docs/products.md (design: shared/design/products.md); every HDU,
column and keyword name used here comes from :mod:`csst_sls_z.datamodel`.

Reading
    :func:`open_product` accepts both input layouts:

    * Layout A: ``SPEC_GV`` / ``SPEC_GI`` binary tables, one row per object, vector
      columns WAVELENGTH / FLUX / ERR of fixed length or FITS variable-length arrays.
    * Layout B: binary tables whose header has ``BAND`` in {GV, GI}, one row per pixel,
      one object per HDU. The OBJID is the ``OBJID`` keyword of the extension, else of
      the primary header, else the file's stem (with ``.fits``/``.fit``/``.fts`` and a
      compression suffix removed). A stem that is not an integer is turned into a
      stable one: ``int(sha1(stem.encode()).hexdigest()[:15], 16)`` (60 bits, so it
      always fits an int64); a non-integer OBJID keyword is hashed the same way. RA and
      DEC come from the keywords of those names, else NaN.

    Objects are joined across bands by OBJID. Their order (the order of the output
    catalogue) is that of first appearance: the GV objects in GV row (HDU) order, then
    the objects only in GI in GI order. An OBJID repeated within one band keeps its
    first row; the repeated ids are listed in ``ProductReader.duplicate_objids``.

    OBJID, RA and DEC are read at open time; the spectra are read lazily, one chunk of
    objects at a time (:meth:`ProductReader.iter_chunks`), so memory stays flat however
    large the file. Bad pixel values (NaN, ERR <= 0, unsorted wavelengths) are passed
    through unchanged: repairing them is the preprocessing's job.

    Real-world storage (docs/robustness.md): TSCAL/TZERO/TNULL of scaled columns are
    applied (from the stored bytes: fitsio gets them wrong); the TUNIT of WAVELENGTH,
    FLUX and ERR is converted with astropy.units to ``datamodel.WAVE_UNIT`` /
    ``datamodel.FLUX_UNIT`` (absent: those units are assumed, logged, and reported by
    :meth:`ProductReader.header_cards`); CHECKSUM/DATASUM are verified where present.
    The file is opened once: hashing, measuring and copying go through that descriptor.

Writing
    :func:`write_redshift_product` writes the input's primary header plus provenance,
    the input's extensions unchanged (unless ``catalog_only``) and SLS_REDSHIFT, with
    checksums, atomically (a locked temporary file in the target directory, then a
    rename, or without ``overwrite`` an exclusive hard link).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import fitsio
import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

from .durable import commit, fsync_path
from .datamodel import (BANDS_USED, COL_DEC, COL_ERR, COL_FLUX, COL_OBJID, COL_RA,
                        COL_WAVE, EXT_REDSHIFT, EXT_SPEC, FLUX_UNIT, KEY_BAND, KEY_OBJID,
                        KW_INPUT_CHECKSUM, KW_UNITS_ASSUMED, REDSHIFT_COLUMNS, REDSHIFT_DTYPE,
                        SPEC_VECTOR_COLUMNS, WAVE_UNIT)

log = logging.getLogger(__name__)

__all__ = ["ProductError", "BandData", "ProductReader", "open_product",
           "write_redshift_product"]

LAYOUT_A = "A"
LAYOUT_B = "B"

# FITS TFORM letters numpy can hold as real numbers, and their sizes in bytes.
_NUMERIC_LETTERS = {"B": 1, "I": 2, "J": 4, "K": 8, "E": 4, "D": 8}
_INTEGER_LETTERS = "BIJK"
# Bytes per element of every TFORM letter (P/Q are descriptors), to locate columns in a row.
_LETTER_BYTES = {"L": 1, "B": 1, "A": 1, "I": 2, "J": 4, "K": 8, "E": 4, "D": 8,
                 "C": 8, "M": 16, "P": 8, "Q": 16}
_TFORM_RE = re.compile(r"^\s*(\d*)\s*([LXBIJKAEDCMPQ])\s*([LXBIJKAEDCM]?)\s*(\(\s*\d*\s*\))?\s*$")
_GZIP_MAGIC = b"\x1f\x8b"
_FITS_SUFFIXES = (".fits", ".fit", ".fts")
_COMPRESSION_SUFFIXES = (".gz", ".fz", ".bz2", ".z")


class ProductError(Exception):
    """Unreadable / malformed input. str(exc) is one sentence naming the file and the problem."""


@dataclass
class BandData:
    """One band of one chunk of objects, CSR-packed (numba-friendly).

    Object k's pixels are ``wave[offsets[k]:offsets[k+1]]`` (and the same slices of
    flux, err); the slice is empty where ``present[k]`` is False.
    """
    wave: np.ndarray       # float64, flat concatenation of every object's pixels
    flux: np.ndarray       # float64, flat
    err: np.ndarray        # float64, flat
    offsets: np.ndarray    # int64 (n+1,)
    present: np.ndarray    # bool (n,), False where the object has no row in this band

    @property
    def n_objects(self) -> int:
        return len(self.present)

    def pixels(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(wave, flux, err) views of object k."""
        a, b = self.offsets[k], self.offsets[k + 1]
        return self.wave[a:b], self.flux[a:b], self.err[a:b]


# ---------------------------------------------------------------------------- helpers
def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _cfitsio_reason(exc: BaseException) -> str:
    """The first useful line of a (multi-line) cfitsio error message."""
    for line in str(exc).splitlines():
        line = re.sub(r"^FITSIO status = \d+:\s*", "", line).strip()
        if line:
            return line.rstrip(".:")
    return type(exc).__name__


def _stem_of(path: Path) -> str:
    """The file name without compression and FITS suffixes (``123.fits.gz`` -> ``123``)."""
    name = path.name
    for suffixes in (_COMPRESSION_SUFFIXES, _FITS_SUFFIXES):
        for suffix in suffixes:
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                break
    return name


def stable_objid(text: str) -> int:
    """An int64 OBJID for a name: the integer it spells, else the first 15 hex digits of its sha1."""
    text = str(text).strip()
    try:
        value = int(text)
        if -(2 ** 63) <= value < 2 ** 63:
            return value
    except ValueError:
        pass
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:15], 16)


@dataclass
class _ColSpec:
    """What the header says about one column of a binary table."""
    name: str            # as spelled in the file
    tform: str
    letter: str          # element type (for P/Q the type of the array elements)
    var: str             # '' for fixed length, 'P' or 'Q' for variable length
    repeat: int          # elements per row (fixed length only)
    offset: int | None   # byte offset of the column in a row, None if unknown
    unit: str | None = None      # TUNITn, None when absent or blank
    tscal: object = 1.0          # TSCALn / TZEROn as written (checked when the column is read)
    tzero: object = 0.0
    tnull: object = None         # TNULLn (integer columns: the raw value marking a missing pixel)

    @property
    def scaled(self) -> bool:
        """True when cfitsio/fitsio would hand back raw or wrongly scaled numbers: this reader
        then reads the raw values itself and applies TSCAL/TZERO/TNULL (docs/robustness.md).
        fitsio gets the unsigned-integer conventions (TSCAL 1, TZERO 2**15, 2**31, 2**63, -128) right."""
        if self.letter not in _NUMERIC_LETTERS:
            return False
        if self.tnull is not None and self.letter in _INTEGER_LETTERS:
            return True
        if (self.tscal, self.tzero) == (1.0, 0.0):
            return False
        return not (self.tscal == 1.0 and self.tzero == _UNSIGNED_ZERO.get(self.letter))


def _parse_columns(hdr) -> tuple[dict[str, _ColSpec], int | None]:
    """Columns of a binary table keyed by upper-case name, and the row width NAXIS1.

    Byte offsets are computed from the TFORMs; when they do not add up to NAXIS1 the
    offsets are set to None (then the open-time descriptor check is skipped).
    """
    ncol = int(hdr.get("TFIELDS", 0) or 0)
    cols: dict[str, _ColSpec] = {}
    offset = 0
    offsets_ok = True
    for i in range(1, ncol + 1):
        name = str(hdr.get(f"TTYPE{i}", f"COL{i}")).strip()
        tform = str(hdr.get(f"TFORM{i}", "")).strip().upper()
        m = _TFORM_RE.match(tform)
        if m is None:
            spec = _ColSpec(name, tform, "?", "", 0, None)
            offsets_ok = False
        else:
            rep = int(m.group(1)) if m.group(1) else 1
            code = m.group(2)
            if code in "PQ":
                spec = _ColSpec(name, tform, m.group(3) or "?", code, 1, offset)
                nbytes = _LETTER_BYTES[code] * max(rep, 1)
            else:
                spec = _ColSpec(name, tform, code, "", rep, offset)
                nbytes = (rep + 7) // 8 if code == "X" else _LETTER_BYTES[code] * rep
            offset += nbytes
        unit = _hdr_get(hdr, f"TUNIT{i}", None)
        spec.unit = str(unit).strip() or None if unit is not None else None
        spec.tscal = _hdr_get(hdr, f"TSCAL{i}", 1.0)
        spec.tzero = _hdr_get(hdr, f"TZERO{i}", 0.0)
        spec.tnull = _hdr_get(hdr, f"TNULL{i}", None)
        cols.setdefault(name.upper(), spec)   # a repeated name: the first one wins, as in cfitsio
    naxis1 = hdr.get("NAXIS1")
    if not offsets_ok or naxis1 is None or int(naxis1) != offset:
        for spec in cols.values():
            spec.offset = None
    return cols, (int(naxis1) if naxis1 is not None else None)


def _hdr_get(hdr, key, default=None):
    try:
        value = hdr.get(key, default)
    except Exception:  # fitsio raises on odd keys; treat as absent
        return default
    return default if value is None else value


def _as_float(value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return np.nan
    return out


# astropy's words for what the reader logs itself (bytes after the last HDU), in one line
_REPORTED_BY_THE_READER = ("Unexpected extra padding at the end of the file",)


_WARNED: set = set()       # (file identity, message): what was already logged in this process


def _warn_once(identity, msg: str, *args) -> None:
    """log.warning, once per file and message (the command's quick checks open an input too)."""
    text = msg % args if args else msg
    key = (identity, text)
    if key in _WARNED:
        return
    if len(_WARNED) > 10000:
        _WARNED.clear()
    _WARNED.add(key)
    log.warning("%s", text)


@contextlib.contextmanager
def _warnings_to_log(path, identity=None):
    """Warnings of astropy, fitsio and numpy about one file go to the log, once each, not raw to stderr."""
    from astropy.units import UnitsWarning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # astropy's advice on how a TUNIT is spelled ("multiple slashes"): not a problem with the data
        warnings.simplefilter("ignore", UnitsWarning)
        try:
            yield
        finally:
            for w in caught:
                text = _one_line(w.message)
                if not text.startswith(_REPORTED_BY_THE_READER):
                    _warn_once(identity or str(path), "%s: %s: %s", path, w.category.__name__, text)


def _os_reason(exc: BaseException) -> str:
    """The operating system's wording of an OSError, once (astropy re-raises ENOSPC with its own prefix)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.strerror:
            return exc.strerror
        m = re.search(r"\[Errno (\d+)\]", str(exc))
        if m:
            return os.strerror(int(m.group(1)))
        exc = exc.__cause__ or exc.__context__
    return ""


# ---------------------------------------------------------------------------- units and scaling
# Raw element types of the numeric TFORM letters (FITS is big-endian).
_RAW_DTYPES = {"B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}
# TZERO of the unsigned-integer conventions (with TSCAL 1), which fitsio applies itself.
_UNSIGNED_ZERO = {"B": -128.0, "I": 32768.0, "J": 2147483648.0, "K": 9223372036854775808.0}
_UNIT_TARGETS = {COL_WAVE: WAVE_UNIT, COL_FLUX: FLUX_UNIT, COL_ERR: FLUX_UNIT}


def _parse_unit(text: str):
    """An astropy unit for a TUNIT string (generic syntax, then the FITS standard's), or None."""
    import astropy.units as u
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # "multiple slashes are discouraged" and the like
        for fmt in ("generic", "fits"):
            try:
                return u.Unit(text, format=fmt, parse_strict="raise")
            except (ValueError, TypeError):
                continue
    return None


def _unit_factor(path, where: str, cname: str, text: str) -> float:
    """The factor taking column ``cname`` from its TUNIT ``text`` to the internal unit."""
    import astropy.units as u
    target = _UNIT_TARGETS[cname]
    unit = _parse_unit(text)
    if unit is None:
        raise ProductError(f"input product {path} has column {cname} in {where} with unit {text!r}, "
                           f"which astropy.units cannot parse")
    try:
        factor = float(unit.to(u.Unit(target)))
    except (u.UnitsError, ValueError, TypeError):
        raise ProductError(f"input product {path} has column {cname} in {where} with unit {text!r}, "
                           f"which cannot be converted to {target}") from None
    if not (np.isfinite(factor) and factor > 0):
        raise ProductError(f"input product {path} has column {cname} in {where} with unit {text!r}, "
                           f"which is not a usable scale of {target}")
    return factor


def _unit_factors(path, where: str, cols: dict) -> tuple[dict, list]:
    """Factors to the internal units for WAVELENGTH, FLUX, ERR, and the columns without a TUNIT.

    A column without TUNIT is taken to be in the documented unit (docs/products.md). FLUX and
    ERR must both have a TUNIT or neither: with one only, the other's scale would be a guess.
    """
    flux_unit, err_unit = cols[COL_FLUX].unit, cols[COL_ERR].unit
    if (flux_unit is None) != (err_unit is None):
        have, lack = (COL_FLUX, COL_ERR) if err_unit is None else (COL_ERR, COL_FLUX)
        raise ProductError(f"input product {path} gives column {have} in {where} the unit "
                           f"{cols[have].unit!r} but {lack} no unit; FLUX and ERR need a TUNIT each, or neither")
    factors, assumed = {}, []
    for cname in SPEC_VECTOR_COLUMNS:
        text = cols[cname].unit
        if text is None:
            factors[cname] = 1.0
            assumed.append(cname)
        else:
            factors[cname] = _unit_factor(path, where, cname, text)
    return factors, assumed


def _check_scaling(path, where: str, spec: _ColSpec) -> None:
    for key, value in (("TSCAL", spec.tscal), ("TZERO", spec.tzero)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value) \
                or (key == "TSCAL" and value == 0):
            raise ProductError(f"input product {path} has column {spec.name} in {where} with {key} = {value!r}, "
                               f"which is not a usable number")
    if spec.tnull is not None and spec.letter in _INTEGER_LETTERS and \
            (isinstance(spec.tnull, bool) or not isinstance(spec.tnull, (int, np.integer))):
        raise ProductError(f"input product {path} has column {spec.name} in {where} with TNULL = "
                           f"{spec.tnull!r}, which is not an integer")
    spec.tscal, spec.tzero = float(spec.tscal), float(spec.tzero)


def _to_internal(values: np.ndarray, factor: float) -> np.ndarray:
    """float64 values in the column's unit -> the internal unit (in place; overflow gives inf, a bad pixel)."""
    if factor != 1.0:
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            values *= factor
    return values


SPEC_REQUIRED_AND_POSITION = (COL_OBJID, COL_RA, COL_DEC) + SPEC_VECTOR_COLUMNS


def _physical(raw: np.ndarray, spec: _ColSpec) -> np.ndarray:
    """Raw stored numbers -> float64 values: TNULL -> NaN, then value * TSCAL + TZERO."""
    out = raw.astype(np.float64)
    null = (raw == spec.tnull) if spec.tnull is not None and spec.letter in _INTEGER_LETTERS else None
    if (spec.tscal, spec.tzero) != (1.0, 0.0):
        with np.errstate(over="ignore", invalid="ignore"):
            out *= spec.tscal
            out += spec.tzero
    if null is not None:
        out[null] = np.nan
    return out


# ---------------------------------------------------------------------------- band sources
class _TableBand:
    """Layout A: one SPEC_<band> table, one row per object."""

    def __init__(self, reader: "ProductReader", hdu_index: int, band: str, extname: str):
        self.reader = reader
        self.hdu_index = hdu_index
        self.band = band
        self.label = f"table {extname}"
        path = reader.path
        hdu = reader._fits[hdu_index]
        hdr = hdu.read_header()
        self.nrows = int(hdu.get_nrows())
        self.cols, self.naxis1 = _parse_columns(hdr)
        self.hdr = hdr
        missing = [c for c in (COL_OBJID,) + SPEC_VECTOR_COLUMNS if c not in self.cols]
        if missing:
            raise ProductError(f"input product {path} has no {' or '.join(missing)} column in {self.label}")
        for cname in SPEC_VECTOR_COLUMNS:
            spec = self.cols[cname]
            if spec.letter not in _NUMERIC_LETTERS:
                raise ProductError(f"input product {path} has column {cname} of type {spec.tform!r} in "
                                   f"{self.label}, which cannot be read as real numbers")
        for spec in self.cols.values():
            if spec.name.upper() in SPEC_REQUIRED_AND_POSITION and spec.letter in _NUMERIC_LETTERS:
                _check_scaling(path, self.label, spec)
        self.factors, assumed = _unit_factors(path, self.label, self.cols)
        reader._note_assumed_units(self.label, assumed)
        self.vec = [self.cols[c] for c in SPEC_VECTOR_COLUMNS]
        self.ids = self._read_objid()
        self.ra = self._read_optional_float(COL_RA)
        self.dec = self._read_optional_float(COL_DEC)
        self.lengths = self._row_lengths()

    # -- open-time reads
    def _read_column(self, spec: _ColSpec) -> np.ndarray:
        if self.nrows == 0:
            return np.zeros(0)
        if spec.scaled:
            if spec.name.upper() == COL_OBJID:
                return self._scaled_objid(spec)
            return self.reader._read_raw(self.hdu_index, spec, np.arange(self.nrows), self.label).reshape(-1)
        try:
            return self.reader._fits[self.hdu_index].read_column(spec.name)
        except Exception as exc:
            raise ProductError(f"input product {self.reader.path} could not be read: column {spec.name} of "
                               f"{self.label} failed ({_cfitsio_reason(exc)})") from None

    def _scaled_objid(self, spec: _ColSpec) -> np.ndarray:
        """OBJID with TZERO (TSCAL 1): added in integers, so 64-bit ids stay exact; TNULL is ignored."""
        if spec.tscal != 1.0 or spec.tzero != round(spec.tzero) or spec.repeat != 1 or spec.var \
                or spec.letter not in _INTEGER_LETTERS:
            raise ProductError(f"input product {self.reader.path} has column {COL_OBJID} in {self.label} scaled "
                               f"by TSCAL = {spec.tscal!r}, TZERO = {spec.tzero!r}, which cannot be integer ids")
        raw_spec = _ColSpec(spec.name, spec.tform, spec.letter, "", 1, spec.offset)
        raw = self.reader._read_raw(self.hdu_index, raw_spec, np.arange(self.nrows), self.label, raw=True)
        values = [int(x) + int(spec.tzero) for x in raw.reshape(-1)]
        if values and not (-(2 ** 63) <= min(values) and max(values) < 2 ** 63):
            raise ProductError(f"input product {self.reader.path} has values in column {COL_OBJID} of "
                               f"{self.label} that do not fit a 64-bit integer")
        return np.array(values, dtype=np.int64)

    def _read_objid(self) -> np.ndarray:
        spec = self.cols[COL_OBJID]
        path = self.reader.path
        bad = ProductError(f"input product {path} has column {COL_OBJID} of type {spec.tform!r} in "
                           f"{self.label}, which cannot be read as integer ids")
        if spec.var or (spec.letter != "A" and spec.repeat != 1):
            raise bad
        if spec.letter not in _NUMERIC_LETTERS and spec.letter != "A":
            raise bad
        raw = np.asarray(self._read_column(spec))
        if self.nrows == 0:
            return np.zeros(0, dtype=np.int64)
        raw = raw.reshape(self.nrows)
        if raw.dtype.kind in "iu":
            if raw.dtype.kind == "u" and raw.size and raw.max() > np.iinfo(np.int64).max:
                raise bad
            return raw.astype(np.int64)
        if raw.dtype.kind == "f":
            if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)) \
                    or np.any(np.abs(raw) >= 2.0 ** 63):
                raise ProductError(f"input product {path} has non-integer values in column "
                                   f"{COL_OBJID} of {self.label}")
            return raw.astype(np.int64)
        if raw.dtype.kind in "SU":
            try:
                return np.array([int(x.decode() if isinstance(x, bytes) else x) for x in raw],
                                dtype=np.int64)
            except (ValueError, OverflowError, UnicodeDecodeError):
                raise ProductError(f"input product {path} has values in column {COL_OBJID} of "
                                   f"{self.label} that are not integers") from None
        raise bad

    def _read_optional_float(self, name: str) -> np.ndarray | None:
        spec = self.cols.get(name)
        if spec is None:
            return None
        if spec.var or spec.repeat != 1 or spec.letter not in _NUMERIC_LETTERS:
            raise ProductError(f"input product {self.reader.path} has column {name} of type {spec.tform!r} "
                               f"in {self.label}, which cannot be read as one number per row")
        return np.asarray(self._read_column(spec), dtype=np.float64).reshape(self.nrows)

    def _row_lengths(self) -> np.ndarray | None:
        """Pixels per row, checked equal across WAVELENGTH, FLUX, ERR, without reading the spectra.

        Variable-length columns are sized from their descriptors, read straight from the
        file with a memory map (cfitsio has no call for that). Returns None when that is
        impossible (compressed file, odd TFORMs): the check then happens per chunk.
        """
        lengths = []
        for spec in self.vec:
            if not spec.var:
                lengths.append(np.full(self.nrows, spec.repeat, dtype=np.int64))
                continue
            counts = self._descriptor_counts(spec)
            if counts is None:
                return None
            lengths.append(counts)
        self._check_lengths(lengths, np.arange(self.nrows))
        return lengths[0]

    def _descriptor_counts(self, spec: _ColSpec) -> np.ndarray | None:
        reader = self.reader
        if reader._compressed or spec.offset is None or self.naxis1 is None:
            return None
        if self.nrows == 0:
            return np.zeros(0, dtype=np.int64)
        info = reader._fits[self.hdu_index].get_offsets()
        width = 8 if spec.var == "P" else 16
        mm = np.memmap(reader._fh, dtype=np.uint8, mode="r", offset=info["data_start"],
                       shape=(self.nrows, self.naxis1))
        try:
            raw = np.ascontiguousarray(mm[:, spec.offset:spec.offset + width])
        finally:
            del mm
        desc = raw.view(">i4" if spec.var == "P" else ">i8").reshape(self.nrows, 2).astype(np.int64)
        counts, heap_off = desc[:, 0], desc[:, 1]
        # A descriptor pointing outside the heap means a corrupt file; say so now, not mid-run.
        nbytes_main = self.naxis1 * self.nrows
        theap = int(_hdr_get(self.hdr, "THEAP", nbytes_main))
        heap_size = int(_hdr_get(self.hdr, "PCOUNT", 0)) - (theap - nbytes_main)
        end = heap_off + counts * _NUMERIC_LETTERS[spec.letter]
        bad = np.flatnonzero((counts < 0) | (heap_off < 0) | (end > heap_size))
        if bad.size:
            raise ProductError(f"input product {reader.path} is corrupt: column {spec.name} of "
                               f"{self.label} row {bad[0]} points outside the table's heap")
        return counts

    def _check_lengths(self, lengths, rows) -> None:
        l0, l1, l2 = lengths
        bad = np.flatnonzero((l0 != l1) | (l0 != l2))
        if bad.size:
            k = bad[0]
            row = int(rows[k])
            raise ProductError(
                f"input product {self.reader.path} has {COL_WAVE}, {COL_FLUX} and {COL_ERR} of different "
                f"lengths ({l0[k]}, {l1[k]}, {l2[k]}) in {self.label} row {row} "
                f"({COL_OBJID} {self.ids[row]})")

    # -- lazy reads
    def read(self, rows: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Pixel counts and flat (wave, flux, err) of ``rows`` (distinct), in the order given."""
        if rows.size == 0:
            empty = np.zeros(0, dtype=np.float64)
            return np.zeros(0, dtype=np.int64), (empty, empty.copy(), empty.copy())
        sorted_rows = np.sort(rows)
        order = np.searchsorted(sorted_rows, rows)
        plain = [s.name for s in self.vec if not s.scaled]
        data = None
        if plain:
            try:
                with _warnings_to_log(self.reader.path, self.reader._identity):
                    data = self.reader._fits[self.hdu_index].read(rows=sorted_rows, columns=plain,
                                                                  vstorage="object")
            except Exception as exc:
                raise ProductError(f"input product {self.reader.path} could not be read: spectra of "
                                   f"{self.label} failed ({_cfitsio_reason(exc)})") from None
        columns, lengths = [], []
        for spec, cname in zip(self.vec, SPEC_VECTOR_COLUMNS):
            if spec.scaled:
                col = self.reader._read_raw(self.hdu_index, spec, sorted_rows, self.label)
            else:
                col = data[spec.name]
            if spec.var:
                items = [np.asarray(col[i], dtype=np.float64).ravel() for i in order]
                lengths.append(np.array([len(x) for x in items], dtype=np.int64))
                values = np.concatenate(items) if items else np.zeros(0)
            else:
                arr = np.asarray(col).reshape(len(sorted_rows), -1)[order]
                lengths.append(np.full(len(rows), arr.shape[1], dtype=np.int64))
                values = arr.astype(np.float64).reshape(-1)
            columns.append(_to_internal(values, self.factors[cname]))
        self._check_lengths(lengths, rows)
        return lengths[0], tuple(columns)


class _PixelHDUBand:
    """Layout B: every HDU of one band is one object, one row per pixel."""

    def __init__(self, reader: "ProductReader", band: str, entries: list[dict]):
        self.reader = reader
        self.band = band
        self.entries = entries          # per "row": hdu index, cols, npix (or None)
        self.label = f"BAND={band} extensions"
        self.ids = np.array([e["objid"] for e in entries], dtype=np.int64)
        self.ra = np.array([e["ra"] for e in entries], dtype=np.float64)
        self.dec = np.array([e["dec"] for e in entries], dtype=np.float64)

    def read(self, rows: np.ndarray):
        waves, fluxes, errs, lengths = [], [], [], []
        for row in rows:
            entry = self.entries[int(row)]
            hdu = self.reader._fits[entry["hdu"]]
            specs = [entry["cols"][c] for c in SPEC_VECTOR_COLUMNS]
            plain = [s.name for s in specs if not s.scaled]
            try:
                with _warnings_to_log(self.reader.path, self.reader._identity):
                    data = hdu.read(columns=plain, vstorage="object") if entry["nrows"] and plain else None
            except Exception as exc:
                raise ProductError(f"input product {self.reader.path} could not be read: HDU "
                                   f"{entry['hdu']} failed ({_cfitsio_reason(exc)})") from None
            cols = []
            for spec, cname in zip(specs, SPEC_VECTOR_COLUMNS):
                if not entry["nrows"]:
                    cols.append(np.zeros(0))
                    continue
                if spec.scaled:
                    col = self.reader._read_raw(entry["hdu"], spec, np.arange(entry["nrows"]),
                                                f"HDU {entry['hdu']}")
                else:
                    col = data[spec.name]
                if isinstance(col, list) or col.dtype == object:
                    parts = [np.asarray(x, dtype=np.float64).ravel() for x in col]
                    values = np.concatenate(parts) if parts else np.zeros(0)
                else:
                    values = np.array(col, dtype=np.float64).ravel()
                cols.append(_to_internal(values, entry["factors"][cname]))
            if not (len(cols[0]) == len(cols[1]) == len(cols[2])):
                raise ProductError(
                    f"input product {self.reader.path} has {COL_WAVE}, {COL_FLUX} and {COL_ERR} of different "
                    f"lengths ({len(cols[0])}, {len(cols[1])}, {len(cols[2])}) in HDU {entry['hdu']}")
            waves.append(cols[0])
            fluxes.append(cols[1])
            errs.append(cols[2])
            lengths.append(len(cols[0]))

        def cat(parts):
            return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)
        return np.array(lengths, dtype=np.int64), (cat(waves), cat(fluxes), cat(errs))


# ---------------------------------------------------------------------------- reader
class ProductReader:
    """An open input product: object ids and positions now, spectra chunk by chunk.

    Attributes: ``path``, ``layout`` ('A' or 'B'), ``primary_header`` (astropy Header),
    ``objid`` (int64, union over GV and GI in order of first appearance), ``ra``/``dec``
    (float64, NaN where absent), ``n_objects``, ``duplicate_objids`` (ids repeated within
    one band table; the first occurrence is the one used), ``units_assumed`` (the
    spectrum columns without TUNIT), ``checksum_state`` (VALID, ABSENT or FAILED).

    The file is opened once and that descriptor is kept: its sha256 (:meth:`sha256`) and
    the copy into the output (:meth:`copy_source`) read the very file that was measured,
    even if another file is renamed over the path meanwhile; :meth:`unchanged` tells
    whether it was modified in place since it was opened. A file whose CHECKSUM or
    DATASUM fails is refused unless ``ignore_checksum``.
    """

    def __init__(self, path: os.PathLike | str, ignore_checksum: bool = False):
        self.path = Path(path)
        self._fits = None
        self._fh = None
        self._sources: dict[str, _TableBand | _PixelHDUBand] = {}
        self._tables: dict[int, dict] = {}
        self._sha256 = None
        self.ignore_checksum = bool(ignore_checksum)
        self.units_assumed: list[str] = []
        self.checksum_state = "ABSENT"
        if not self.path.exists():
            raise ProductError(f"input product {self.path} does not exist")
        if not self.path.is_file():
            raise ProductError(f"input product {self.path} is not a regular file")
        try:
            self._fh = open(self.path, "rb")
            self._stat = os.fstat(self._fh.fileno())
            magic = os.pread(self._fh.fileno(), 9, 0)
        except OSError as exc:
            self.close()
            raise ProductError(f"input product {self.path} cannot be read ({exc.strerror or exc})") from None
        self._compressed = magic[:2] == _GZIP_MAGIC
        if not self._compressed and not magic.startswith(b"SIMPLE  ="):
            self.close()
            raise ProductError(f"input product {self.path} is not a FITS file (it does not begin with SIMPLE)")
        try:
            with _warnings_to_log(self.path, self._identity):
                self._fits = fitsio.FITS(str(self.path), "r")   # read-only: the input is never modified
        except Exception as exc:
            self.close()
            raise ProductError(f"input product {self.path} is not a readable FITS file "
                               f"({_cfitsio_reason(exc)})") from None
        if self.replaced():       # cfitsio opened the path after our descriptor: it must be the same file
            self.close()
            raise ProductError(f"input product {self.path} was replaced by another file while it was being "
                               f"opened; run again")
        try:
            with _warnings_to_log(self.path, self._identity):
                self._open()
        except ProductError:
            self.close()
            raise
        except Exception as exc:  # anything cfitsio/astropy throws at a malformed file
            self.close()
            raise ProductError(f"input product {self.path} is malformed ({_one_line(_cfitsio_reason(exc))})") from None

    # -- the file that was opened
    @property
    def _identity(self):
        st = self._stat
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def _warn(self, msg: str, *args) -> None:
        _warn_once(self._identity, msg, *args)

    def sha256(self) -> str:
        """sha256 of the opened file (read through the kept descriptor, not the path)."""
        if self._sha256 is None:
            h = hashlib.sha256()
            fd, offset = self._fh.fileno(), 0
            while True:
                chunk = os.pread(fd, 1 << 20, offset)
                if not chunk:
                    break
                h.update(chunk)
                offset += len(chunk)
            self._sha256 = h.hexdigest()
        return self._sha256

    def unchanged(self) -> bool:
        """True if the opened file still has the size and modification times it had when opened."""
        st = os.fstat(self._fh.fileno())     # not ctime: unlinking the file (a rename over it) changes that
        return (st.st_size, st.st_mtime_ns) == (self._stat.st_size, self._stat.st_mtime_ns)

    def replaced(self) -> bool:
        """True if the path no longer names the opened file (another was renamed over it, or it is gone)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != (self._stat.st_dev, self._stat.st_ino)

    def copy_source(self):
        """A new binary file object on the opened file (for astropy to copy its HDUs from)."""
        f = os.fdopen(os.dup(self._fh.fileno()), "rb")
        f.seek(0)
        return f

    def header_cards(self) -> list[tuple[str, object, str]]:
        """Output header cards describing how the input was read (units, checksums)."""
        return [(KW_UNITS_ASSUMED, bool(self.units_assumed), "T: a spectrum column had no TUNIT"),
                (KW_INPUT_CHECKSUM, self.checksum_state, "input CHECKSUM/DATASUM check")]

    def _note_assumed_units(self, where: str, columns) -> None:
        if columns:
            self.units_assumed.append(f"{', '.join(columns)} of {where}")

    def _verify_checksums(self) -> None:
        """CHECKSUM / DATASUM of every HDU that has them (cfitsio computes them)."""
        present, failed = False, []
        for i in range(len(self._fits)):
            hdu = self._fits[i]
            hdr = hdu.read_header()
            has_data, has_hdu = "DATASUM" in hdr, "CHECKSUM" in hdr
            if not (has_data or has_hdu):
                continue
            present = True
            name = (hdu.get_extname() or "").strip() or ("primary" if i == 0 else "no EXTNAME")
            try:
                res = hdu._FITS.verify_checksum(i + 1)  # {'dataok', 'hduok'}: 1 ok, 0 missing, -1 wrong
            except Exception as exc:                     # a damaged CHECKSUM/DATASUM card
                failed.append(f"HDU {i} ({name}) has CHECKSUM/DATASUM cards that cannot be checked "
                              f"({_cfitsio_reason(exc)})")
                continue
            if has_data and res["dataok"] != 1:
                failed.append(f"HDU {i} ({name}) has a DATASUM that does not match its data")
            elif has_hdu and res["hduok"] != 1:
                failed.append(f"HDU {i} ({name}) has a CHECKSUM that does not match its header and data")
        self.checksum_state = "FAILED" if failed else "VALID" if present else "ABSENT"
        if failed:
            more = f" (and {len(failed) - 1} more HDU(s))" if len(failed) > 1 else ""
            if not self.ignore_checksum:
                raise ProductError(f"input product {self.path} fails its FITS checksum: {failed[0]}{more}, so "
                                   f"the file is corrupt (--ignore-checksum processes it anyway)")
            self._warn("%s fails its FITS checksum: %s%s; processed anyway (ignore_checksum), the output "
                        "says %s = 'FAILED'", self.path, failed[0], more, KW_INPUT_CHECKSUM)

    def _table_info(self, hdu_index: int) -> dict:
        info = self._tables.get(hdu_index)
        if info is None:
            hdu = self._fits[hdu_index]
            hdr = hdu.read_header()
            off = hdu.get_offsets()
            naxis1, nrows = int(_hdr_get(hdr, "NAXIS1", 0)), int(_hdr_get(hdr, "NAXIS2", 0))
            main = naxis1 * nrows
            size = os.fstat(self._fh.fileno()).st_size
            info = {"start": int(off["data_start"]), "naxis1": naxis1, "nrows": nrows,
                    "theap": int(_hdr_get(hdr, "THEAP", main)), "heap_end": main + int(_hdr_get(hdr, "PCOUNT", 0)),
                    "length": min(int(off["data_end"]), size) - int(off["data_start"])}
            self._tables[hdu_index] = info
        return info

    def _read_raw(self, hdu_index: int, spec: _ColSpec, rows: np.ndarray, where: str, raw: bool = False):
        """The stored numbers of one column for ``rows`` (sorted), read from the file's bytes.

        cfitsio/fitsio return wrong values for scaled integer columns, so TSCAL, TZERO and
        TNULL are applied here (``raw`` returns the stored numbers). Fixed length: a 2-D
        array (rows, repeat); variable length: a list of 1-D arrays.
        """
        if self._compressed:
            raise ProductError(f"input product {self.path} stores column {spec.name} of {where} as scaled "
                               f"numbers (TSCAL/TZERO/TNULL), which are read only from an uncompressed file; "
                               f"decompress it first")
        if spec.offset is None:
            raise ProductError(f"input product {self.path} stores column {spec.name} of {where} as scaled "
                               f"numbers (TSCAL/TZERO/TNULL) in a table whose TFORMs do not add up to NAXIS1")
        info = self._table_info(hdu_index)
        dtype = np.dtype(_RAW_DTYPES[spec.letter])
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0 or info["nrows"] == 0 or info["length"] <= 0:
            return [] if spec.var else np.zeros((0, spec.repeat))
        mm = np.memmap(self._fh, dtype=np.uint8, mode="r", offset=info["start"], shape=(info["length"],))
        try:
            table = mm[: info["nrows"] * info["naxis1"]].reshape(info["nrows"], info["naxis1"])
            if not spec.var:
                nbytes = dtype.itemsize * spec.repeat
                block = np.ascontiguousarray(table[rows, spec.offset:spec.offset + nbytes])
                values = block.view(dtype).reshape(len(rows), spec.repeat)
                return values.copy() if raw else _physical(values, spec)
            width = 8 if spec.var == "P" else 16
            desc = np.ascontiguousarray(table[rows, spec.offset:spec.offset + width])
            desc = desc.view(">i4" if spec.var == "P" else ">i8").reshape(len(rows), 2).astype(np.int64)
            out = []
            limit = min(info["heap_end"], info["length"])
            for k, (count, heap_off) in enumerate(desc):
                start = info["theap"] + heap_off
                end = start + count * dtype.itemsize
                if count < 0 or heap_off < 0 or end > limit:
                    raise ProductError(f"input product {self.path} is corrupt: column {spec.name} of {where} "
                                       f"row {rows[k]} points outside the table's heap")
                values = mm[start:end].view(dtype)
                out.append(values.copy() if raw else _physical(values, spec))
            return out
        finally:
            del mm

    # -- opening
    def _open(self) -> None:
        self._check_complete()
        self._verify_checksums()
        with self.copy_source() as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore", VerifyWarning)
            self.primary_header = fits.getheader(fh, 0)
        hdus = []
        for i in range(len(self._fits)):
            hdu = self._fits[i]
            hdus.append((i, hdu.get_exttype(), (hdu.get_extname() or "").strip().upper()))
        table_a = {}
        for band in BANDS_USED:
            found = [i for i, kind, name in hdus if name == EXT_SPEC[band] and i > 0]
            if found:
                if _kind_of(hdus, found[0]) != "BINARY_TBL":
                    raise ProductError(f"input product {self.path} has {EXT_SPEC[band]} that is not a binary table")
                if len(found) > 1:
                    self._warn("%s has %d %s extensions; reading the first", self.path, len(found),
                                EXT_SPEC[band])
                table_a[band] = found[0]
        if table_a:
            self.layout = LAYOUT_A
            for band, idx in table_a.items():
                self._sources[band] = _TableBand(self, idx, band, EXT_SPEC[band])
        else:
            entries = self._layout_b_entries(hdus)
            if not any(entries.values()):
                raise ProductError(f"input product {self.path} has no "
                                   f"{' or '.join(EXT_SPEC[b] for b in BANDS_USED)} table and no binary "
                                   f"table with {KEY_BAND}={' or '.join(BANDS_USED)}")
            self.layout = LAYOUT_B
            for band in BANDS_USED:
                if entries[band]:
                    self._sources[band] = _PixelHDUBand(self, band, entries[band])
        self._join()
        if self.units_assumed:
            self._warn("%s: no TUNIT for %s; assuming %s in %s and %s, %s in %s (the output says %s = T)",
                        self.path, "; ".join(self.units_assumed), COL_WAVE, WAVE_UNIT, COL_FLUX, COL_ERR,
                        FLUX_UNIT, KW_UNITS_ASSUMED)
        counts = ", ".join(f"{b} {len(s.ids)}" for b, s in self._sources.items())
        log.info("opened %s: layout %s, %d objects (rows: %s)", self.path, self.layout, self.n_objects, counts)

    def _check_complete(self) -> None:
        """Fail now on a truncated file, rather than in the middle of a run.

        cfitsio opens a file cut inside an HDU's data, and silently stops at an
        extension whose header is cut; compare what the headers promise with the size.
        """
        if self._compressed:
            return
        size = os.fstat(self._fh.fileno()).st_size
        end = 0
        for i in range(len(self._fits)):
            # data_end includes the padding to 2880 bytes; cfitsio cannot read a file
            # that lacks it either, so a short file is truncated even if only padding is gone.
            end = self._fits[i].get_offsets()["data_end"]
            if end > size:
                raise ProductError(f"input product {self.path} is truncated: HDU {i} ends at byte {end} "
                                   f"but the file has {size} bytes")
        if size > end:
            tail = os.pread(self._fh.fileno(), 8, end)
            if tail == b"XTENSION":
                raise ProductError(f"input product {self.path} is truncated or corrupt: the extension "
                                   f"starting at byte {end} cannot be read")
            self._warn("%s has %d bytes after its last HDU; they are ignored", self.path, size - end)

    def _layout_b_entries(self, hdus) -> dict[str, list[dict]]:
        entries: dict[str, list[dict]] = {b: [] for b in BANDS_USED}
        primary = self._fits[0].read_header()
        stem = _stem_of(self.path)
        for i, kind, _name in hdus:
            if i == 0 or kind != "BINARY_TBL":
                continue
            hdr = self._fits[i].read_header()
            band = str(_hdr_get(hdr, KEY_BAND, "")).strip().upper()
            if band not in BANDS_USED:
                continue   # GU, or not a spectrum
            cols, _ = _parse_columns(hdr)
            missing = [c for c in SPEC_VECTOR_COLUMNS if c not in cols]
            if missing:
                raise ProductError(f"input product {self.path} has no {' or '.join(missing)} column in "
                                   f"HDU {i} ({KEY_BAND}={band})")
            for cname in SPEC_VECTOR_COLUMNS:
                if cols[cname].letter not in _NUMERIC_LETTERS:
                    raise ProductError(f"input product {self.path} has column {cname} of type "
                                       f"{cols[cname].tform!r} in HDU {i}, which cannot be read as real numbers")
                _check_scaling(self.path, f"HDU {i}", cols[cname])
            factors, assumed = _unit_factors(self.path, f"HDU {i} ({KEY_BAND}={band})", cols)
            self._note_assumed_units(f"HDU {i}", assumed)
            nrows = int(self._fits[i].get_nrows())
            if not any(cols[c].var for c in SPEC_VECTOR_COLUMNS):
                n = [nrows * cols[c].repeat for c in SPEC_VECTOR_COLUMNS]
                if len(set(n)) > 1:
                    raise ProductError(f"input product {self.path} has {COL_WAVE}, {COL_FLUX} and {COL_ERR} of "
                                       f"different lengths ({n[0]}, {n[1]}, {n[2]}) in HDU {i}")
            raw_id = _hdr_get(hdr, KEY_OBJID, _hdr_get(primary, KEY_OBJID, None))
            if raw_id is None:
                objid = stable_objid(stem)
            else:
                objid = stable_objid(raw_id)
                if str(objid) != str(raw_id).strip():
                    self._warn("%s HDU %d: %s=%r is not an integer; using %d", self.path, i, KEY_OBJID,
                                raw_id, objid)
            ra = _as_float(_hdr_get(hdr, COL_RA, _hdr_get(primary, COL_RA, np.nan)))
            dec = _as_float(_hdr_get(hdr, COL_DEC, _hdr_get(primary, COL_DEC, np.nan)))
            entries[band].append({"hdu": i, "cols": cols, "nrows": nrows, "objid": objid, "ra": ra, "dec": dec,
                                  "factors": factors})
        return entries

    def _join(self) -> None:
        """Union of OBJIDs over the bands in order of first appearance; per band, the row of each."""
        ordered: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        dups = []
        for band, src in self._sources.items():
            ids = src.ids
            uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
            if np.any(counts > 1):
                dups.append(uniq[counts > 1])
            rows = np.sort(first)
            ordered[band] = (ids[rows], rows)
        parts = []
        seen = np.zeros(0, dtype=np.int64)
        for band in BANDS_USED:
            if band in ordered:
                ids = ordered[band][0]
                new = ids[~np.isin(ids, seen)]
                parts.append(new)
                seen = np.concatenate([seen, new])
        self.objid = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        n = len(self.objid)
        self._rows: dict[str, np.ndarray] = {}
        for band in BANDS_USED:
            rowidx = np.full(n, -1, dtype=np.int64)
            if band in ordered and n:
                ids, rows = ordered[band]
                sorter = np.argsort(ids)
                pos = np.searchsorted(ids, self.objid, sorter=sorter)
                pos = np.clip(pos, 0, max(len(ids) - 1, 0))
                if len(ids):
                    hit = ids[sorter[pos]] == self.objid
                    rowidx[hit] = rows[sorter[pos[hit]]]
            self._rows[band] = rowidx
        self.ra = np.full(n, np.nan)
        self.dec = np.full(n, np.nan)
        for band in BANDS_USED:   # GV first; GI fills what GV lacks
            src = self._sources.get(band)
            if src is None:
                continue
            rowidx = self._rows[band]
            for out, values in ((self.ra, src.ra), (self.dec, src.dec)):
                if values is None:
                    continue
                take = (rowidx >= 0) & np.isnan(out)
                out[take] = values[rowidx[take]]
        if dups:
            dup = np.unique(np.concatenate(dups))
            self.duplicate_objids = self.objid[np.isin(self.objid, dup)]
            self._warn("%s: %d OBJID(s) occur more than once in one band table (e.g. %s); the first "
                        "occurrence of each is used", self.path, len(dup),
                        ", ".join(str(x) for x in self.duplicate_objids[:5]))
        else:
            self.duplicate_objids = np.zeros(0, dtype=np.int64)

    # -- public
    @property
    def n_objects(self) -> int:
        return len(self.objid)

    @property
    def bands_present(self) -> tuple[str, ...]:
        """Bands with a table (layout A) or at least one HDU (layout B) in the file."""
        return tuple(b for b in BANDS_USED if b in self._sources)

    def read_band(self, band: str, sl: slice) -> BandData:
        """The spectra of objects ``sl`` (a slice of the object order) in one band."""
        rowidx = self._rows[band][sl]
        n = len(rowidx)
        present = rowidx >= 0
        offsets = np.zeros(n + 1, dtype=np.int64)
        src = self._sources.get(band)
        if src is None or not present.any():
            empty = np.zeros(0, dtype=np.float64)
            return BandData(empty, empty.copy(), empty.copy(), offsets, present)
        lengths, (wave, flux, err) = src.read(rowidx[present])
        counts = np.zeros(n, dtype=np.int64)
        counts[present] = lengths
        np.cumsum(counts, out=offsets[1:])
        return BandData(wave, flux, err, offsets, present)

    def iter_chunks(self, chunk_size: int) -> Iterator[tuple[slice, dict[str, BandData]]]:
        """Yield ``(slice of the object order, {'GV': BandData, 'GI': BandData})`` chunk by chunk."""
        chunk_size = int(chunk_size)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if self._fits is None:
            raise ValueError(f"product {self.path} is closed")
        for start in range(0, self.n_objects, chunk_size):
            sl = slice(start, min(start + chunk_size, self.n_objects))
            yield sl, {band: self.read_band(band, sl) for band in BANDS_USED}

    def close(self) -> None:
        try:
            if self._fits is not None:
                self._fits.close()
        finally:
            self._fits = None
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def __enter__(self) -> "ProductReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        layout = getattr(self, "layout", "?")
        n = len(getattr(self, "objid", ()))
        return f"ProductReader({str(self.path)!r}, layout={layout!r}, n_objects={n})"


def _kind_of(hdus, index) -> str:
    for i, kind, _ in hdus:
        if i == index:
            return kind
    return ""


def open_product(path: os.PathLike | str, ignore_checksum: bool = False) -> ProductReader:
    """Open an input product of layout A or B; raises ProductError if it is unreadable or, unless
    ``ignore_checksum``, if a CHECKSUM/DATASUM fails."""
    return ProductReader(path, ignore_checksum=ignore_checksum)


# ---------------------------------------------------------------------------- writer
def _card_value(value):
    return value.item() if isinstance(value, np.generic) else value


def _add_cards(header: fits.Header, cards) -> None:
    with warnings.catch_warnings():
        # Keys over 8 characters become HIERARCH cards; astropy warns each time.
        warnings.simplefilter("ignore", VerifyWarning)
        for key, value, comment in cards:
            key = str(key).strip()
            if key.upper() == "HISTORY":
                header.add_history(str(value))
            elif key.upper() == "COMMENT":
                header.add_comment(str(value))
            else:
                header[key] = (_card_value(value), comment)


def _catalog_hdu(catalog: np.ndarray, cards) -> fits.BinTableHDU:
    catalog = np.asarray(catalog)
    names = catalog.dtype.names or ()
    missing = [c.name for c in REDSHIFT_COLUMNS if c.name not in names]
    extra = [n for n in names if n not in REDSHIFT_DTYPE.names]
    if missing or extra:
        raise ValueError(f"catalog does not match the SLS_REDSHIFT data model "
                         f"(missing {missing or 'none'}, unknown {extra or 'none'})")
    columns = [fits.Column(name=c.name, format=c.fits_format, unit=c.unit or None,
                           array=np.asarray(catalog[c.name], dtype=c.dtype))
               for c in REDSHIFT_COLUMNS]
    hdu = fits.BinTableHDU.from_columns(columns, name=EXT_REDSHIFT)
    for i, c in enumerate(REDSHIFT_COLUMNS, start=1):
        hdu.header.comments[f"TTYPE{i}"] = c.header_comment   # short enough to stay whole in the card
    _add_cards(hdu.header, cards)
    return hdu


def _write_hdulist(hdul: fits.HDUList, tmp: Path) -> None:
    """Write with checksums on every HDU. Separate so tests can make it fail half-way."""
    import warnings
    from astropy.io.fits.verify import VerifyWarning
    with warnings.catch_warnings():
        # Long comments are cut to fit a card; values are never cut.
        warnings.filterwarnings("ignore", message="Card is too long", category=VerifyWarning)
        hdul.writeto(tmp, overwrite=True, checksum=True, output_verify="fix+warn")


# What astropy raises for an input HDU it cannot re-read or re-encode (cfitsio may have read it).
_INPUT_COPY_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, fits.VerifyError)
_CORRUPTED_HDU = getattr(getattr(fits.hdu, "base", None), "_CorruptedHDU", ())


def _name_max(directory: Path) -> int:
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def _temp_suffix(path: Path) -> str:
    return ".tmp.fits.gz" if path.name.lower().endswith(".gz") else ".tmp"


def temp_prefix(path: Path) -> str:
    """``.NAME.``: how every temporary name of ``path`` begins (then 8 hex digits and ``.tmp``).

    NAME is cut (at a character boundary) where the whole temporary name would exceed the
    file system's name limit, so any output name that is legal has a legal temporary name.
    """
    path = Path(path)
    room = _name_max(path.parent) - len(f"..{'0' * 8}{_temp_suffix(path)}")
    raw = os.fsencode(path.name)
    if len(raw) > room:
        cut = raw[:max(room, 1)]
        try:
            raw.decode("utf-8")
            name = cut.decode("utf-8", "ignore")      # a character cut in half is dropped
        except UnicodeDecodeError:
            name = os.fsdecode(cut)
    else:
        name = path.name
    return f".{name}."


def temp_glob(path: Path) -> list[str]:
    """Glob patterns matching the temporary files of ``path`` (of this and of killed processes)."""
    import glob as _glob
    head = _glob.escape(temp_prefix(path)) + "[0-9a-f]" * 8
    return [head + ".tmp", head + ".tmp.fits.gz"]


class TempFile:
    """A new file beside ``target`` for writing it, locked (``flock``) while this process owns it.

    Created with O_EXCL under a name from :func:`temp_prefix`; the lock tells a cleaner
    (:func:`remove_abandoned_temp`, used by ``csst-sls-z batch``) that it is live, and
    goes when the process ends, however it ends.
    """

    def __init__(self, target: Path):
        target = Path(target)
        prefix, suffix = temp_prefix(target), _temp_suffix(target)
        self._fd = None
        for _ in range(100):
            path = target.parent / f"{prefix}{secrets.token_hex(4)}{suffix}"
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)   # mode from the umask
            except FileExistsError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:          # a cleaner caught it before we did: take another name
                os.close(fd)
                continue
            except OSError:                  # no locks on this file system: still ours, unprotected
                pass
            st, mine = None, os.fstat(fd)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                pass
            if st is None or (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
                os.close(fd)                 # removed between its creation and our lock
                continue
            self.path, self._fd = path, fd
            return
        raise FileExistsError(f"could not create a temporary file beside {target}")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            self.close()


def remove_abandoned_temp(path: Path) -> bool:
    """Remove the temporary file ``path`` if no live process holds it; True if removed."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:                      # held by a live writer (or no locks here): leave it
            return False
        st, mine = os.stat(path), os.fstat(fd)
        if (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
            return False
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _commit_new(tmp: Path, path: Path) -> None:
    """Give the complete ``tmp`` the name ``path`` only if no file has it: hard link, then unlink ``tmp``.

    Two runs writing the same new output cannot both succeed: the second link fails. On a
    file system without hard links the rename is checked first, which is not exclusive.
    """
    fsync_path(tmp)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"output {path} was created by another process while this run was writing it; "
                              f"refusing to overwrite it (use overwrite)") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
            raise
        if os.path.lexists(path):
            raise FileExistsError(f"output {path} was created by another process while this run was "
                                  f"writing it; refusing to overwrite it (use overwrite)") from None
        os.rename(tmp, path)
    else:
        os.unlink(tmp)
    try:
        fsync_path(Path(path).parent, directory=True)
    except OSError:
        pass


def missing_directory_reason(directory: Path) -> str:
    """One sentence on why ``directory`` cannot take an output ('' if it is a directory)."""
    directory = Path(directory)
    if directory.is_dir():
        return ""
    for parent in [directory] + list(directory.parents):
        if parent.exists() or parent.is_symlink():
            if parent.is_dir():
                break
            if parent == directory:
                return f"output directory {directory} is not a directory (it is a file)"
            return f"output directory {directory} cannot exist: {parent} is a file, not a directory"
    return f"output directory {directory} does not exist"


def write_redshift_product(out_path, input_path, catalog: np.ndarray,
                           header_cards: list[tuple[str, object, str]],
                           catalog_only: bool = False, overwrite: bool = False,
                           source: ProductReader | None = None) -> Path:
    """Write the output product: input primary header + provenance, input extensions, SLS_REDSHIFT.

    ``header_cards`` (key, value, comment) go into both the primary and the SLS_REDSHIFT
    header. Every non-primary HDU of the input except an old SLS_REDSHIFT is copied
    unchanged (bytes copied, not re-encoded) unless ``catalog_only``. ``source``, the open
    reader that measured the catalogue, is where the input's HDUs are copied from (its
    descriptor, not the path); if that file was modified since it was opened, nothing is
    written. The file is written with checksums under a temporary name in the target
    directory and renamed into place: exclusively (a hard link) unless ``overwrite``, so
    two runs never silently replace each other's new output; nothing partial is ever left
    behind. Returns the output path.
    """
    out_path = Path(out_path)
    input_path = Path(input_path)
    limit = _name_max(out_path.parent) if out_path.parent.is_dir() else 255
    if len(os.fsencode(out_path.name)) > limit:
        raise OSError(f"output name {out_path.name[:40]}... is {len(os.fsencode(out_path.name))} bytes, longer "
                      f"than the {limit} bytes the file system allows")
    if source is None and not input_path.is_file():
        raise ProductError(f"input product {input_path} does not exist or is not a file")
    if out_path.resolve() == input_path.resolve() or (out_path.exists() and input_path.exists()
                                                       and os.path.samefile(out_path, input_path)):
        raise ProductError(f"output {out_path} is the input product; refusing to overwrite the input")
    why = missing_directory_reason(out_path.parent)
    if why:
        raise (NotADirectoryError if "not a directory" in why or "is a file" in why else FileNotFoundError)(why)
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"output {out_path} exists; refusing to overwrite it (use overwrite)")
    if out_path.is_dir():
        raise IsADirectoryError(f"output {out_path} is a directory")

    cat_hdu = _catalog_hdu(catalog, header_cards)
    changed = (f"input product {input_path} was modified while it was being processed (its size or "
               f"modification time is not what it was when opened); nothing was written, run again")
    if source is not None and not source.unchanged():
        raise ProductError(changed)
    try:
        tmp = TempFile(out_path)
    except OSError as exc:
        raise type(exc)(f"cannot create a file in output directory {out_path.parent} "
                        f"({_os_reason(exc) or _one_line(exc)})") from None
    try:
        with _warnings_to_log(input_path, source._identity if source is not None else None):
            _write_output(out_path, input_path, tmp.path, cat_hdu, header_cards, catalog_only, source)
        if source is not None:
            if not source.unchanged():
                raise ProductError(changed)
            if source.replaced():
                log.warning("input product %s was replaced by another file during the run; the output is "
                            "made from the file that was opened and measured (sha256 %s)", input_path,
                            source.sha256())
        if overwrite:
            commit(tmp.path, out_path)
        else:
            _commit_new(tmp.path, out_path)
    except BaseException:
        tmp.discard()
        raise
    tmp.close()
    log.info("wrote %s (%d objects%s)", out_path, len(catalog), ", catalogue only" if catalog_only else "")
    return out_path


def _write_output(out_path: Path, input_path: Path, tmp: Path, cat_hdu, header_cards, catalog_only: bool,
                  source: ProductReader | None) -> None:
    src = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VerifyWarning)
            src = fits.open(source.copy_source() if source is not None else input_path, mode="readonly",
                            memmap=True)
        primary_src = src[0]
        header = primary_src.header.copy()
        _add_cards(header, header_cards)
        data = primary_src.data if int(primary_src.header.get("NAXIS", 0)) > 0 else None
        out = fits.HDUList([fits.PrimaryHDU(data=data, header=header)])
        if not catalog_only:
            for i, hdu in enumerate(src[1:], start=1):
                if isinstance(hdu, _CORRUPTED_HDU):
                    raise ProductError(f"input product {input_path} has a corrupt HDU {i} that cannot be "
                                       f"copied into the output")
                if str(hdu.header.get("EXTNAME", "")).strip().upper() == EXT_REDSHIFT:
                    continue   # a previous run's catalogue is replaced, not kept
                out.append(hdu)
    except BaseException as exc:
        if src is not None:
            src.close()
        if isinstance(exc, ProductError) or not isinstance(exc, _INPUT_COPY_ERRORS + (OSError,)):
            raise
        raise ProductError(f"input product {input_path} cannot be read to copy it into the output "
                           f"({_one_line(exc) or type(exc).__name__})") from None
    try:
        out.append(cat_hdu)
        try:
            _write_hdulist(out, tmp)
        except OSError as exc:        # disk full, quota, I/O error: name the output, one sentence
            raise type(exc)(f"cannot write output {out_path} ({_os_reason(exc) or _one_line(exc)})") from None
        except _INPUT_COPY_ERRORS as exc:
            # astropy cannot re-encode an input HDU that cfitsio read (a corrupt card or header)
            raise ProductError(f"input product {input_path} has an extension that cannot be copied into "
                               f"the output ({_one_line(exc) or type(exc).__name__})") from None
    finally:
        src.close()
