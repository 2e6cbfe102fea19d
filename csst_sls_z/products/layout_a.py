"""Layout A: binary tables SPEC_GV / SPEC_GI, one row per object (docs/products.md).

Vector columns WAVELENGTH / FLUX / ERR of fixed length or FITS variable-length arrays;
OBJID and, optionally, RA and DEC columns. The simulator writes this layout.
"""
from __future__ import annotations

import numpy as np

from ..datamodel import (BANDS_USED, COL_DEC, COL_ERR, COL_FLUX, COL_OBJID, COL_RA, COL_WAVE, EXT_SPEC,
                         SPEC_VECTOR_COLUMNS)
from .fitsutil import (INTEGER_LETTERS, NUMERIC_LETTERS, SPEC_REQUIRED_AND_POSITION, ColSpec, ProductError,
                       cfitsio_reason, check_scaling, hdr_get, parse_columns, to_internal, unit_factors, warnings_to_log)
from .layout import Layout

LAYOUT_A = "A"


def _kind_of(hdus, index) -> str:
    for i, kind, _ in hdus:
        if i == index:
            return kind
    return ""


class LayoutA(Layout):
    """Layout A: one SPEC_<band> table, one row per object."""

    name = LAYOUT_A
    wanted = f"{' or '.join(EXT_SPEC[b] for b in BANDS_USED)} table"

    @classmethod
    def detect(cls, reader, hdus) -> dict[str, "LayoutA"]:
        """A band for every SPEC_GV / SPEC_GI binary table (the first of a repeated name)."""
        found_tables = {}
        for band in BANDS_USED:
            found = [i for i, kind, name in hdus if name == EXT_SPEC[band] and i > 0]
            if found:
                if _kind_of(hdus, found[0]) != "BINARY_TBL":
                    raise ProductError(f"input product {reader.path} has {EXT_SPEC[band]} that is not a binary table")
                if len(found) > 1:
                    reader.warn("%s has %d %s extensions; reading the first", reader.path, len(found),
                                 EXT_SPEC[band])
                found_tables[band] = found[0]
        return {band: cls(reader, idx, band, EXT_SPEC[band]) for band, idx in found_tables.items()}

    def __init__(self, reader, hdu_index: int, band: str, extname: str):
        self.reader = reader
        self.hdu_index = hdu_index
        self.band = band
        self.label = f"table {extname}"
        path = reader.path
        hdu = reader.hdu(hdu_index)
        hdr = hdu.read_header()
        self.nrows = int(hdu.get_nrows())
        self.cols, self.naxis1 = parse_columns(hdr)
        self.hdr = hdr
        missing = [c for c in (COL_OBJID,) + SPEC_VECTOR_COLUMNS if c not in self.cols]
        if missing:
            raise ProductError(f"input product {path} has no {' or '.join(missing)} column in {self.label}")
        for cname in SPEC_VECTOR_COLUMNS:
            spec = self.cols[cname]
            if spec.letter not in NUMERIC_LETTERS:
                raise ProductError(f"input product {path} has column {cname} of type {spec.tform!r} in "
                                   f"{self.label}, which cannot be read as real numbers")
        for spec in self.cols.values():
            if spec.name.upper() in SPEC_REQUIRED_AND_POSITION and spec.letter in NUMERIC_LETTERS:
                check_scaling(path, self.label, spec)
        self.factors, assumed = unit_factors(path, self.label, self.cols)
        reader.note_assumed_units(self.label, assumed)
        self.vec = [self.cols[c] for c in SPEC_VECTOR_COLUMNS]
        self.ids = self._read_objid()
        self.ra = self._read_optional_float(COL_RA)
        self.dec = self._read_optional_float(COL_DEC)
        self.lengths = self._row_lengths()

    # -- open-time reads
    def _read_column(self, spec: ColSpec) -> np.ndarray:
        if self.nrows == 0:
            return np.zeros(0)
        if spec.scaled:
            if spec.name.upper() == COL_OBJID:
                return self._scaled_objid(spec)
            return self.reader.read_stored_column(self.hdu_index, spec, np.arange(self.nrows), self.label).reshape(-1)
        try:
            return self.reader.hdu(self.hdu_index).read_column(spec.name)
        except Exception as exc:
            raise ProductError(f"input product {self.reader.path} could not be read: column {spec.name} of "
                               f"{self.label} failed ({cfitsio_reason(exc)})") from None

    def _scaled_objid(self, spec: ColSpec) -> np.ndarray:
        """OBJID with TZERO (TSCAL 1): added in integers, so 64-bit ids stay exact; TNULL is ignored."""
        if spec.tscal != 1.0 or spec.tzero != round(spec.tzero) or spec.repeat != 1 or spec.var \
                or spec.letter not in INTEGER_LETTERS:
            raise ProductError(f"input product {self.reader.path} has column {COL_OBJID} in {self.label} scaled "
                               f"by TSCAL = {spec.tscal!r}, TZERO = {spec.tzero!r}, which cannot be integer ids")
        raw_spec = ColSpec(spec.name, spec.tform, spec.letter, "", 1, spec.offset)
        raw = self.reader.read_stored_column(self.hdu_index, raw_spec, np.arange(self.nrows), self.label, raw=True)
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
        if spec.letter not in NUMERIC_LETTERS and spec.letter != "A":
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
        if spec.var or spec.repeat != 1 or spec.letter not in NUMERIC_LETTERS:
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

    def _descriptor_counts(self, spec: ColSpec) -> np.ndarray | None:
        reader = self.reader
        if reader.compressed or spec.offset is None or self.naxis1 is None:
            return None
        if self.nrows == 0:
            return np.zeros(0, dtype=np.int64)
        info = reader.hdu(self.hdu_index).get_offsets()
        width = 8 if spec.var == "P" else 16
        mm = reader.memmap(info["data_start"], (self.nrows, self.naxis1))
        try:
            raw = np.ascontiguousarray(mm[:, spec.offset:spec.offset + width])
        finally:
            del mm
        desc = raw.view(">i4" if spec.var == "P" else ">i8").reshape(self.nrows, 2).astype(np.int64)
        counts, heap_off = desc[:, 0], desc[:, 1]
        # A descriptor pointing outside the heap means a corrupt file; say so now, not mid-run.
        nbytes_main = self.naxis1 * self.nrows
        theap = int(hdr_get(self.hdr, "THEAP", nbytes_main))
        heap_size = int(hdr_get(self.hdr, "PCOUNT", 0)) - (theap - nbytes_main)
        end = heap_off + counts * NUMERIC_LETTERS[spec.letter]
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
                with warnings_to_log(self.reader.path, self.reader.identity):
                    data = self.reader.hdu(self.hdu_index).read(rows=sorted_rows, columns=plain, vstorage="object")
            except Exception as exc:
                raise ProductError(f"input product {self.reader.path} could not be read: spectra of "
                                   f"{self.label} failed ({cfitsio_reason(exc)})") from None
        columns, lengths = [], []
        for spec, cname in zip(self.vec, SPEC_VECTOR_COLUMNS):
            if spec.scaled:
                col = self.reader.read_stored_column(self.hdu_index, spec, sorted_rows, self.label)
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
            columns.append(to_internal(values, self.factors[cname]))
        self._check_lengths(lengths, rows)
        return lengths[0], tuple(columns)
