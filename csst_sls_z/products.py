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

Writing
    :func:`write_redshift_product` writes the input's primary header plus provenance,
    the input's extensions unchanged (unless ``catalog_only``) and SLS_REDSHIFT, with
    checksums, atomically (temporary file in the target directory, then rename).
"""
from __future__ import annotations

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

from .durable import commit
from .datamodel import (BANDS_USED, COL_DEC, COL_ERR, COL_FLUX, COL_OBJID, COL_RA,
                        COL_WAVE, EXT_REDSHIFT, EXT_SPEC, KEY_BAND, KEY_OBJID,
                        REDSHIFT_COLUMNS, REDSHIFT_DTYPE, SPEC_VECTOR_COLUMNS)

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
        self.vec = [self.cols[c] for c in SPEC_VECTOR_COLUMNS]
        self.ids = self._read_objid()
        self.ra = self._read_optional_float(COL_RA)
        self.dec = self._read_optional_float(COL_DEC)
        self.lengths = self._row_lengths()

    # -- open-time reads
    def _read_column(self, spec: _ColSpec) -> np.ndarray:
        if self.nrows == 0:
            return np.zeros(0)
        try:
            return self.reader._fits[self.hdu_index].read_column(spec.name)
        except Exception as exc:
            raise ProductError(f"input product {self.reader.path} could not be read: column {spec.name} of "
                               f"{self.label} failed ({_cfitsio_reason(exc)})") from None

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
        mm = np.memmap(reader.path, dtype=np.uint8, mode="r", offset=info["data_start"],
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
        try:
            data = self.reader._fits[self.hdu_index].read(
                rows=sorted_rows, columns=[s.name for s in self.vec], vstorage="object")
        except Exception as exc:
            raise ProductError(f"input product {self.reader.path} could not be read: spectra of "
                               f"{self.label} failed ({_cfitsio_reason(exc)})") from None
        columns, lengths = [], []
        for spec in self.vec:
            col = data[spec.name]
            if spec.var:
                items = [np.asarray(col[i], dtype=np.float64).ravel() for i in order]
                lengths.append(np.array([len(x) for x in items], dtype=np.int64))
                columns.append(np.concatenate(items) if items else np.zeros(0))
            else:
                arr = np.asarray(col).reshape(len(sorted_rows), -1)[order]
                lengths.append(np.full(len(rows), arr.shape[1], dtype=np.int64))
                columns.append(arr.astype(np.float64).reshape(-1))
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
            names = [entry["cols"][c].name for c in SPEC_VECTOR_COLUMNS]
            try:
                data = hdu.read(columns=names, vstorage="object") if entry["nrows"] else None
            except Exception as exc:
                raise ProductError(f"input product {self.reader.path} could not be read: HDU "
                                   f"{entry['hdu']} failed ({_cfitsio_reason(exc)})") from None
            cols = []
            for name in names:
                if data is None:
                    cols.append(np.zeros(0))
                    continue
                col = data[name]
                if col.dtype == object:
                    parts = [np.asarray(x, dtype=np.float64).ravel() for x in col]
                    cols.append(np.concatenate(parts) if parts else np.zeros(0))
                else:
                    cols.append(np.asarray(col, dtype=np.float64).ravel())
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
    one band table; the first occurrence is the one used).
    """

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path)
        self._fits = None
        self._sources: dict[str, _TableBand | _PixelHDUBand] = {}
        if not self.path.exists():
            raise ProductError(f"input product {self.path} does not exist")
        if not self.path.is_file():
            raise ProductError(f"input product {self.path} is not a regular file")
        try:
            with open(self.path, "rb") as fh:
                magic = fh.read(9)
        except OSError as exc:
            raise ProductError(f"input product {self.path} cannot be read ({exc.strerror or exc})") from None
        self._compressed = magic[:2] == _GZIP_MAGIC
        if not self._compressed and not magic.startswith(b"SIMPLE  ="):
            raise ProductError(f"input product {self.path} is not a FITS file (it does not begin with SIMPLE)")
        try:
            self._fits = fitsio.FITS(str(self.path), "r")   # read-only: the input is never modified
        except Exception as exc:
            raise ProductError(f"input product {self.path} is not a readable FITS file "
                               f"({_cfitsio_reason(exc)})") from None
        try:
            self._open()
        except ProductError:
            self.close()
            raise
        except Exception as exc:  # anything cfitsio/astropy throws at a malformed file
            self.close()
            raise ProductError(f"input product {self.path} is malformed ({_one_line(_cfitsio_reason(exc))})") from None

    # -- opening
    def _open(self) -> None:
        self._check_complete()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VerifyWarning)
            self.primary_header = fits.getheader(self.path, 0)
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
                    log.warning("%s has %d %s extensions; reading the first", self.path, len(found),
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
        counts = ", ".join(f"{b} {len(s.ids)}" for b, s in self._sources.items())
        log.info("opened %s: layout %s, %d objects (rows: %s)", self.path, self.layout, self.n_objects, counts)

    def _check_complete(self) -> None:
        """Fail now on a truncated file, rather than in the middle of a run.

        cfitsio opens a file cut inside an HDU's data, and silently stops at an
        extension whose header is cut; compare what the headers promise with the size.
        """
        if self._compressed:
            return
        size = self.path.stat().st_size
        end = 0
        for i in range(len(self._fits)):
            # data_end includes the padding to 2880 bytes; cfitsio cannot read a file
            # that lacks it either, so a short file is truncated even if only padding is gone.
            end = self._fits[i].get_offsets()["data_end"]
            if end > size:
                raise ProductError(f"input product {self.path} is truncated: HDU {i} ends at byte {end} "
                                   f"but the file has {size} bytes")
        if size > end:
            with open(self.path, "rb") as fh:
                fh.seek(end)
                tail = fh.read(8)
            if tail == b"XTENSION":
                raise ProductError(f"input product {self.path} is truncated or corrupt: the extension "
                                   f"starting at byte {end} cannot be read")
            log.warning("%s has %d bytes after its last HDU; they are ignored", self.path, size - end)

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
                    log.warning("%s HDU %d: %s=%r is not an integer; using %d", self.path, i, KEY_OBJID,
                                raw_id, objid)
            ra = _as_float(_hdr_get(hdr, COL_RA, _hdr_get(primary, COL_RA, np.nan)))
            dec = _as_float(_hdr_get(hdr, COL_DEC, _hdr_get(primary, COL_DEC, np.nan)))
            entries[band].append({"hdu": i, "cols": cols, "nrows": nrows, "objid": objid, "ra": ra, "dec": dec})
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
            log.warning("%s: %d OBJID(s) occur more than once in one band table (e.g. %s); the first "
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
        if self._fits is not None:
            try:
                self._fits.close()
            finally:
                self._fits = None

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


def open_product(path: os.PathLike | str) -> ProductReader:
    """Open an input product of layout A or B; raises ProductError if it is unreadable."""
    return ProductReader(path)


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
        hdu.header.comments[f"TTYPE{i}"] = c.doc[:46]   # what fits in the card
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


def _make_temp(path: Path) -> Path:
    """Create an empty file beside ``path`` (mode from the umask, unlike mkstemp's 0600)."""
    suffix = ".tmp.fits.gz" if path.name.lower().endswith(".gz") else ".tmp"
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {path}")


def write_redshift_product(out_path, input_path, catalog: np.ndarray,
                           header_cards: list[tuple[str, object, str]],
                           catalog_only: bool = False, overwrite: bool = False) -> Path:
    """Write the output product: input primary header + provenance, input extensions, SLS_REDSHIFT.

    ``header_cards`` (key, value, comment) go into both the primary and the SLS_REDSHIFT
    header. Every non-primary HDU of the input except an old SLS_REDSHIFT is copied
    unchanged (bytes copied, not re-encoded) unless ``catalog_only``. The file is
    written with checksums under a temporary name in the target directory and renamed
    into place; nothing partial is ever left behind. Returns the output path.
    """
    out_path = Path(out_path)
    input_path = Path(input_path)
    if not input_path.is_file():
        raise ProductError(f"input product {input_path} does not exist or is not a file")
    if out_path.resolve() == input_path.resolve() or (out_path.exists() and os.path.samefile(out_path, input_path)):
        raise ProductError(f"output {out_path} is the input product; refusing to overwrite the input")
    if not out_path.parent.is_dir():
        raise FileNotFoundError(f"output directory {out_path.parent} does not exist")
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"output {out_path} exists; refusing to overwrite it (use overwrite)")
    if out_path.is_dir():
        raise IsADirectoryError(f"output {out_path} is a directory")

    cat_hdu = _catalog_hdu(catalog, header_cards)
    try:
        tmp = _make_temp(out_path)
    except OSError as exc:
        raise type(exc)(f"cannot create a file in output directory {out_path.parent} "
                        f"({exc.strerror or exc})") from None
    try:
        src = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", VerifyWarning)
                src = fits.open(input_path, mode="readonly", memmap=True)
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
                raise type(exc)(f"cannot write output {out_path} ({exc.strerror or _one_line(exc)})") from None
            except _INPUT_COPY_ERRORS as exc:
                # astropy cannot re-encode an input HDU that cfitsio read (a corrupt card or header)
                raise ProductError(f"input product {input_path} has an extension that cannot be copied into "
                                   f"the output ({_one_line(exc) or type(exc).__name__})") from None
        finally:
            src.close()
        commit(tmp, out_path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    log.info("wrote %s (%d objects%s)", out_path, len(catalog), ", catalogue only" if catalog_only else "")
    return out_path
