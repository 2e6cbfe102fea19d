"""FITS plumbing of the input reader: column descriptions, units, scaled integers, checksums.

Everything here works on one open file and knows no layout: it parses a binary table's
TFORMs (:func:`parse_columns`), converts TUNITs with astropy.units, applies TSCAL/TZERO/TNULL
to the stored bytes (fitsio gets scaled integer columns wrong, docs/robustness.md), checks
CHECKSUM/DATASUM (:func:`verify_checksums`, the one check of the package, for the input, the
outputs and the reference files), and words cfitsio's and the OS's errors as one sentence. The
layouts (``layout_a.py``, ``layout_b.py``), the reader and the writer are built on it.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import fitsio
import numpy as np

from ..datamodel import COL_DEC, COL_ERR, COL_FLUX, COL_OBJID, COL_RA, COL_WAVE, FLUX_UNIT, SPEC_VECTOR_COLUMNS, WAVE_UNIT

log = logging.getLogger(__package__)     # "csst_sls_z.products", for every module of the package

# FITS TFORM letters numpy can hold as real numbers, and their sizes in bytes.
NUMERIC_LETTERS = {"B": 1, "I": 2, "J": 4, "K": 8, "E": 4, "D": 8}
INTEGER_LETTERS = "BIJK"
# Bytes per element of every TFORM letter (P/Q are descriptors), to locate columns in a row.
_LETTER_BYTES = {"L": 1, "B": 1, "A": 1, "I": 2, "J": 4, "K": 8, "E": 4, "D": 8,
                 "C": 8, "M": 16, "P": 8, "Q": 16}
_TFORM_RE = re.compile(r"^\s*(\d*)\s*([LXBIJKAEDCMPQ])\s*([LXBIJKAEDCM]?)\s*(\(\s*\d*\s*\))?\s*$")
GZIP_MAGIC = b"\x1f\x8b"
_FITS_SUFFIXES = (".fits", ".fit", ".fts")
_COMPRESSION_SUFFIXES = (".gz", ".fz", ".bz2", ".z")


class ProductError(Exception):
    """Unreadable / malformed input. str(exc) is one sentence naming the file and the problem."""


# ---------------------------------------------------------------------------- helpers
def one_line(text: str) -> str:
    return " ".join(str(text).split())


def cfitsio_reason(exc: BaseException) -> str:
    """The first useful line of a (multi-line) cfitsio error message."""
    for line in str(exc).splitlines():
        line = re.sub(r"^FITSIO status = \d+:\s*", "", line).strip()
        if line:
            return line.rstrip(".:")
    return type(exc).__name__


def stem_of(path: Path) -> str:
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
class ColSpec:
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
        if self.letter not in NUMERIC_LETTERS:
            return False
        if self.tnull is not None and self.letter in INTEGER_LETTERS:
            return True
        if (self.tscal, self.tzero) == (1.0, 0.0):
            return False
        return not (self.tscal == 1.0 and self.tzero == _UNSIGNED_ZERO.get(self.letter))


def parse_columns(hdr) -> tuple[dict[str, ColSpec], int | None]:
    """Columns of a binary table keyed by upper-case name, and the row width NAXIS1.

    Byte offsets are computed from the TFORMs; when they do not add up to NAXIS1 the
    offsets are set to None (then the open-time descriptor check is skipped).
    """
    ncol = int(hdr.get("TFIELDS", 0) or 0)
    cols: dict[str, ColSpec] = {}
    offset = 0
    offsets_ok = True
    for i in range(1, ncol + 1):
        name = str(hdr.get(f"TTYPE{i}", f"COL{i}")).strip()
        tform = str(hdr.get(f"TFORM{i}", "")).strip().upper()
        m = _TFORM_RE.match(tform)
        if m is None:
            spec = ColSpec(name, tform, "?", "", 0, None)
            offsets_ok = False
        else:
            rep = int(m.group(1)) if m.group(1) else 1
            code = m.group(2)
            if code in "PQ":
                spec = ColSpec(name, tform, m.group(3) or "?", code, 1, offset)
                nbytes = _LETTER_BYTES[code] * max(rep, 1)
            else:
                spec = ColSpec(name, tform, code, "", rep, offset)
                nbytes = (rep + 7) // 8 if code == "X" else _LETTER_BYTES[code] * rep
            offset += nbytes
        unit = hdr_get(hdr, f"TUNIT{i}", None)
        spec.unit = str(unit).strip() or None if unit is not None else None
        spec.tscal = hdr_get(hdr, f"TSCAL{i}", 1.0)
        spec.tzero = hdr_get(hdr, f"TZERO{i}", 0.0)
        spec.tnull = hdr_get(hdr, f"TNULL{i}", None)
        cols.setdefault(name.upper(), spec)   # a repeated name: the first one wins, as in cfitsio
    naxis1 = hdr.get("NAXIS1")
    if not offsets_ok or naxis1 is None or int(naxis1) != offset:
        for spec in cols.values():
            spec.offset = None
    return cols, (int(naxis1) if naxis1 is not None else None)


def hdr_get(hdr, key, default=None):
    try:
        value = hdr.get(key, default)
    except Exception:  # fitsio raises on odd keys; treat as absent
        return default
    return default if value is None else value


def as_float(value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return np.nan
    return out


# astropy's words for what the reader logs itself (bytes after the last HDU), in one line
_REPORTED_BY_THE_READER = ("Unexpected extra padding at the end of the file",)


_WARNED: set = set()       # (file identity, message): what was already logged in this process


def warn_once(identity, msg: str, *args) -> None:
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
def warnings_to_log(path, identity=None):
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
                text = one_line(w.message)
                if not text.startswith(_REPORTED_BY_THE_READER):
                    warn_once(identity or str(path), "%s: %s: %s", path, w.category.__name__, text)


def os_reason(exc: BaseException) -> str:
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


def unit_factors(path, where: str, cols: dict) -> tuple[dict, list]:
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


def check_scaling(path, where: str, spec: ColSpec) -> None:
    for key, value in (("TSCAL", spec.tscal), ("TZERO", spec.tzero)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value) \
                or (key == "TSCAL" and value == 0):
            raise ProductError(f"input product {path} has column {spec.name} in {where} with {key} = {value!r}, "
                               f"which is not a usable number")
    if spec.tnull is not None and spec.letter in INTEGER_LETTERS and \
            (isinstance(spec.tnull, bool) or not isinstance(spec.tnull, (int, np.integer))):
        raise ProductError(f"input product {path} has column {spec.name} in {where} with TNULL = "
                           f"{spec.tnull!r}, which is not an integer")
    spec.tscal, spec.tzero = float(spec.tscal), float(spec.tzero)


def to_internal(values: np.ndarray, factor: float) -> np.ndarray:
    """float64 values in the column's unit -> the internal unit (in place; overflow gives inf, a bad pixel)."""
    if factor != 1.0:
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            values *= factor
    return values


SPEC_REQUIRED_AND_POSITION = (COL_OBJID, COL_RA, COL_DEC) + SPEC_VECTOR_COLUMNS


def _physical(raw: np.ndarray, spec: ColSpec) -> np.ndarray:
    """Raw stored numbers -> float64 values: TNULL -> NaN, then value * TSCAL + TZERO."""
    out = raw.astype(np.float64)
    null = (raw == spec.tnull) if spec.tnull is not None and spec.letter in INTEGER_LETTERS else None
    if (spec.tscal, spec.tzero) != (1.0, 0.0):
        with np.errstate(over="ignore", invalid="ignore"):
            out *= spec.tscal
            out += spec.tzero
    if null is not None:
        out[null] = np.nan
    return out




# ---------------------------------------------------------------------------- stored bytes
def table_info(fits_file, fh, hdu_index: int) -> dict:
    """Where one binary table's rows and heap lie in the file (bytes), for :func:`read_raw`."""
    hdu = fits_file[hdu_index]
    hdr = hdu.read_header()
    off = hdu.get_offsets()
    naxis1, nrows = int(hdr_get(hdr, "NAXIS1", 0)), int(hdr_get(hdr, "NAXIS2", 0))
    main = naxis1 * nrows
    size = os.fstat(fh.fileno()).st_size
    return {"start": int(off["data_start"]), "naxis1": naxis1, "nrows": nrows,
            "theap": int(hdr_get(hdr, "THEAP", main)), "heap_end": main + int(hdr_get(hdr, "PCOUNT", 0)),
            "length": min(int(off["data_end"]), size) - int(off["data_start"])}


def read_raw(path, fh, compressed: bool, info: dict, spec: ColSpec, rows: np.ndarray, where: str,
             raw: bool = False):
    """The stored numbers of one column for ``rows`` (sorted), read from the file's bytes.

    cfitsio/fitsio return wrong values for scaled integer columns, so TSCAL, TZERO and
    TNULL are applied here (``raw`` returns the stored numbers). ``info`` is the table's
    :func:`table_info`. Fixed length: a 2-D array (rows, repeat); variable length: a list
    of 1-D arrays.
    """
    if compressed:
        raise ProductError(f"input product {path} stores column {spec.name} of {where} as scaled "
                           f"numbers (TSCAL/TZERO/TNULL), which are read only from an uncompressed file; "
                           f"decompress it first")
    if spec.offset is None:
        raise ProductError(f"input product {path} stores column {spec.name} of {where} as scaled "
                           f"numbers (TSCAL/TZERO/TNULL) in a table whose TFORMs do not add up to NAXIS1")
    dtype = np.dtype(_RAW_DTYPES[spec.letter])
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0 or info["nrows"] == 0 or info["length"] <= 0:
        return [] if spec.var else np.zeros((0, spec.repeat))
    mm = np.memmap(fh, dtype=np.uint8, mode="r", offset=info["start"], shape=(info["length"],))
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
                raise ProductError(f"input product {path} is corrupt: column {spec.name} of {where} "
                                   f"row {rows[k]} points outside the table's heap")
            values = mm[start:end].view(dtype)
            out.append(values.copy() if raw else _physical(values, spec))
        return out
    finally:
        del mm


# ---------------------------------------------------------------------------- checksums
@dataclass(frozen=True)
class ChecksumCheck:
    """Whether one HDU's DATASUM and CHECKSUM cards hold: True, False, or None (no card, or not checked)."""
    datasum: bool | None
    checksum: bool | None

    @property
    def present(self) -> bool:
        """A DATASUM or CHECKSUM card was found and checked."""
        return self.datasum is not None or self.checksum is not None


def verify_checksums(hdu, datasum: bool = True) -> ChecksumCheck:
    """Check the DATASUM and CHECKSUM cards of one HDU against its header and data.

    ``hdu`` is a fitsio HDU (cfitsio checks both cards in one pass) or an astropy HDU
    (astropy sums it: ``datasum=False`` leaves DATASUM unchecked, which saves a pass over
    the data since a CHECKSUM that holds covers the data too, and a DATASUM that fails
    leaves CHECKSUM unchecked). A card the HDU lacks is None. Raises what the library
    raises for a card or data it cannot read; the caller words it.
    """
    if isinstance(hdu, fitsio.hdu.base.HDUBase):
        # fitsio's public HDU.verify_checksum() only passes or raises, and stops at a missing DATASUM;
        # this is cfitsio's answer per card: 1 holds, -1 does not, 0 no card.
        res = hdu._FITS.verify_checksum(hdu.get_extnum() + 1)
        return ChecksumCheck(*({1: True, -1: False}.get(res[key]) for key in ("dataok", "hduok")))
    has_data, has_hdu = "DATASUM" in hdu.header, "CHECKSUM" in hdu.header
    data_ok = hdu.verify_datasum() == 1 if datasum and has_data else None
    hdu_ok = hdu.verify_checksum() == 1 if has_hdu and data_ok is not False else None
    return ChecksumCheck(data_ok, hdu_ok)
