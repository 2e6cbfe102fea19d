"""Layout B: one object per binary table, one row per pixel (docs/products.md).

Each table's header has ``BAND`` in {GV, GI}; columns WAVELENGTH, FLUX, ERR. The OBJID is
the ``OBJID`` keyword of the extension, else of the primary header, else the file's stem
(with ``.fits``/``.fit``/``.fts`` and a compression suffix removed); a stem or keyword that
is not an integer is turned into a stable one (:func:`~.fitsutil.stable_objid`: the first
15 hex digits of its sha1, so it always fits an int64). RA and DEC come from the keywords
of those names, else NaN.
"""
from __future__ import annotations

import numpy as np

from ..datamodel import BANDS_USED, COL_DEC, COL_ERR, COL_FLUX, COL_RA, COL_WAVE, KEY_BAND, KEY_OBJID, SPEC_VECTOR_COLUMNS
from .fitsutil import (NUMERIC_LETTERS, ProductError, as_float, cfitsio_reason, check_scaling, hdr_get, parse_columns,
                       stable_objid, stem_of, to_internal, unit_factors, warnings_to_log)
from .layout import Layout

LAYOUT_B = "B"


class LayoutB(Layout):
    """Layout B: every HDU of one band is one object, one row per pixel."""

    name = LAYOUT_B
    wanted = f"binary table with {KEY_BAND}={' or '.join(BANDS_USED)}"

    @classmethod
    def detect(cls, reader, hdus) -> dict[str, "LayoutB"]:
        """A band for each of GV, GI with at least one binary table whose header says BAND = it."""
        entries = cls._entries(reader, hdus)
        return {band: cls(reader, band, entries[band]) for band in BANDS_USED if entries[band]}

    @staticmethod
    def _entries(reader, hdus) -> dict[str, list[dict]]:
        """Per band, one entry per object HDU: its index, columns, rows, OBJID, RA, DEC, unit factors."""
        entries: dict[str, list[dict]] = {b: [] for b in BANDS_USED}
        primary = reader.hdu(0).read_header()
        stem = stem_of(reader.path)
        for i, kind, _name in hdus:
            if i == 0 or kind != "BINARY_TBL":
                continue
            hdr = reader.hdu(i).read_header()
            band = str(hdr_get(hdr, KEY_BAND, "")).strip().upper()
            if band not in BANDS_USED:
                continue   # GU, or not a spectrum
            cols, _ = parse_columns(hdr)
            missing = [c for c in SPEC_VECTOR_COLUMNS if c not in cols]
            if missing:
                raise ProductError(f"input product {reader.path} has no {' or '.join(missing)} column in "
                                   f"HDU {i} ({KEY_BAND}={band})")
            for cname in SPEC_VECTOR_COLUMNS:
                if cols[cname].letter not in NUMERIC_LETTERS:
                    raise ProductError(f"input product {reader.path} has column {cname} of type "
                                       f"{cols[cname].tform!r} in HDU {i}, which cannot be read as real numbers")
                check_scaling(reader.path, f"HDU {i}", cols[cname])
            factors, assumed = unit_factors(reader.path, f"HDU {i} ({KEY_BAND}={band})", cols)
            reader.note_assumed_units(f"HDU {i}", assumed)
            nrows = int(reader.hdu(i).get_nrows())
            if not any(cols[c].var for c in SPEC_VECTOR_COLUMNS):
                n = [nrows * cols[c].repeat for c in SPEC_VECTOR_COLUMNS]
                if len(set(n)) > 1:
                    raise ProductError(f"input product {reader.path} has {COL_WAVE}, {COL_FLUX} and {COL_ERR} of "
                                       f"different lengths ({n[0]}, {n[1]}, {n[2]}) in HDU {i}")
            raw_id = hdr_get(hdr, KEY_OBJID, hdr_get(primary, KEY_OBJID, None))
            if raw_id is None:
                objid = stable_objid(stem)
            else:
                objid = stable_objid(raw_id)
                if str(objid) != str(raw_id).strip():
                    reader.warn("%s HDU %d: %s=%r is not an integer; using %d", reader.path, i, KEY_OBJID,
                                 raw_id, objid)
            ra = as_float(hdr_get(hdr, COL_RA, hdr_get(primary, COL_RA, np.nan)))
            dec = as_float(hdr_get(hdr, COL_DEC, hdr_get(primary, COL_DEC, np.nan)))
            entries[band].append({"hdu": i, "cols": cols, "nrows": nrows, "objid": objid, "ra": ra, "dec": dec,
                                  "factors": factors})
        return entries

    def __init__(self, reader, band: str, entries: list[dict]):
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
            hdu = self.reader.hdu(entry["hdu"])
            specs = [entry["cols"][c] for c in SPEC_VECTOR_COLUMNS]
            plain = [s.name for s in specs if not s.scaled]
            try:
                with warnings_to_log(self.reader.path, self.reader.identity):
                    data = hdu.read(columns=plain, vstorage="object") if entry["nrows"] and plain else None
            except Exception as exc:
                raise ProductError(f"input product {self.reader.path} could not be read: HDU "
                                   f"{entry['hdu']} failed ({cfitsio_reason(exc)})") from None
            cols = []
            for spec, cname in zip(specs, SPEC_VECTOR_COLUMNS):
                if not entry["nrows"]:
                    cols.append(np.zeros(0))
                    continue
                if spec.scaled:
                    col = self.reader.read_stored_column(entry["hdu"], spec, np.arange(entry["nrows"]),
                                                f"HDU {entry['hdu']}")
                else:
                    col = data[spec.name]
                if isinstance(col, list) or col.dtype == object:
                    parts = [np.asarray(x, dtype=np.float64).ravel() for x in col]
                    values = np.concatenate(parts) if parts else np.zeros(0)
                else:
                    values = np.array(col, dtype=np.float64).ravel()
                cols.append(to_internal(values, entry["factors"][cname]))
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
