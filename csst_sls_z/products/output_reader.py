"""Reading an SLS_REDSHIFT output product back: the catalogue, its provenance and truth, and
checking that an existing output is complete (every HDU's checksum, the provenance a run
expects).

``read_output`` is what ``csst-sls-z inspect`` reads; ``verify_output`` is how ``csst-sls-z
batch`` decides that an output is done. Errors are :class:`ProductError`, one sentence each.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..datamodel import (EXT_REDSHIFT, EXT_SPEC, EXT_TRUTH, KW_CALIBRATION_METHOD, KW_INPUT_CHECKSUM, KW_INPUT_NAME,
                         KW_PZ_DZ, KW_PZ_NBIN, KW_PZ_SPACE, KW_PZ_Z0, KW_REF_SHA256, KW_REF_TYPE, KW_REFSET,
                         KW_STATUS, PROVENANCE_MATCH_PREFIXES, PZ_COLUMN, indexed_keyword)
from .fitsutil import ProductError, verify_checksums


@dataclass
class OutputProduct:
    path: Path
    catalog: np.ndarray            # the SLS_REDSHIFT table
    header: dict                   # a few SLS_REDSHIFT header values
    truth: np.ndarray | None       # Z_TRUE per catalogue row (NaN where unmatched), or None
    truth_source: str | None
    spectra_path: Path | None      # a file holding SPEC_GV / SPEC_GI for these objects
    references: dict = field(default_factory=dict)   # reftype -> sha256 of the reference files the run used
    pz_edges: np.ndarray | None = None               # z edges of the PZ grid, when the product has a PZ column


def _open_fits(path: Path, what: str):
    from astropy.io import fits
    if not path.exists():
        raise ProductError(f"{what} {path} does not exist")
    if not path.is_file():
        raise ProductError(f"{what} {path} is not a regular file")
    with open(path, "rb") as fh:
        magic = fh.read(9)
    if magic[:2] != b"\x1f\x8b" and not magic.startswith(b"SIMPLE  ="):
        raise ProductError(f"{what} {path} is not a FITS file")
    try:
        return fits.open(path, memmap=True)
    except Exception as exc:       # astropy's errors are many; the user gets one sentence
        raise ProductError(f"{what} {path} cannot be read as FITS ({' '.join(str(exc).split())})") from None


def _extnames(hdul) -> set:
    return {str(h.header.get("EXTNAME", "")).strip().upper() for h in hdul[1:]}


def _truth_table(hdul, path: Path) -> tuple[np.ndarray, np.ndarray]:
    t = hdul[EXT_TRUTH].data
    names = {n.upper() for n in (t.columns.names if t is not None else [])}
    if t is None or not {"OBJID", "Z_TRUE"} <= names:
        raise ProductError(f"the TRUTH extension of {path} has no OBJID and Z_TRUE columns")
    return np.asarray(t["OBJID"], dtype=np.int64), np.asarray(t["Z_TRUE"], dtype=np.float64)


def read_output(path: Path, truth_path: Path | None = None) -> "OutputProduct":
    with _open_fits(path, "product") as hdul:
        names = _extnames(hdul)
        if EXT_REDSHIFT not in names:
            raise ProductError(f"product {path} has no {EXT_REDSHIFT} extension; inspect reads the output of "
                           "csst-sls-z run")
        hdu = hdul[EXT_REDSHIFT]
        data = hdu.data
        needed = ("OBJID", "Z", "ZERR", "ZWARN", "SNR_GI")
        have = set(data.columns.names) if data is not None else set()
        if data is None or not set(needed) <= have:
            raise ProductError(f"{EXT_REDSHIFT} of {path} lacks the columns "
                           f"{', '.join(c for c in needed if c not in have)}")
        # A copy of the scalar columns (the file closes); PZ is read for the few rows drawn (pz_rows).
        scalars = [n for n in data.columns.names if n != PZ_COLUMN.name]
        columns = {n: np.asarray(data[n]) for n in scalars}
        catalog = np.empty(len(data), dtype=[(n, c.dtype, c.shape[1:]) for n, c in columns.items()])
        for n, c in columns.items():
            catalog[n] = c
        header = {k: hdu.header.get(k) for k in (KW_REFSET, KW_STATUS, KW_CALIBRATION_METHOD, KW_INPUT_NAME)}
        references = _references(hdu.header)
        pz_edges = _pz_edges(hdu.header) if PZ_COLUMN.name in data.columns.names else None
        has_spectra = all(EXT_SPEC[b] in names for b in ("GV", "GI"))
        truth = own_truth = None
        if truth_path is None and EXT_TRUTH in names:
            own_truth = _truth_table(hdul, path)
    spectra_path = path if has_spectra else None
    source = None
    if truth_path is not None:
        with _open_fits(truth_path, "truth product") as hdul:
            tnames = _extnames(hdul)
            if EXT_TRUTH not in tnames:
                raise ProductError(f"truth product {truth_path} has no {EXT_TRUTH} extension")
            own_truth = _truth_table(hdul, truth_path)
            if spectra_path is None and all(EXT_SPEC[b] in tnames for b in ("GV", "GI")):
                spectra_path = truth_path
        source = str(truth_path)
    elif own_truth is not None:
        source = f"{EXT_TRUTH} extension of {path}"
    if own_truth is not None:
        objid, z_true = own_truth
        order = np.argsort(objid, kind="stable")
        pos = np.searchsorted(objid[order], catalog["OBJID"])
        pos = np.clip(pos, 0, max(len(objid) - 1, 0))
        hit = (objid[order][pos] == catalog["OBJID"]) if len(objid) else np.zeros(len(catalog), bool)
        truth = np.full(len(catalog), np.nan)
        truth[hit] = z_true[order][pos[hit]]
        if not hit.any():
            raise ProductError(f"no OBJID of {path} is in the truth table of {source}")
    return OutputProduct(path, catalog, header, truth, source, spectra_path, references, pz_edges)


def _references(header) -> dict:
    """{reftype: sha256} of the reference files an output's header lists (REFTYPnn / REFSHAnn)."""
    out = {}
    for i in range(100):
        reftype = header.get(indexed_keyword(KW_REF_TYPE, i))
        if reftype is None:
            break
        out[str(reftype).strip()] = str(header.get(indexed_keyword(KW_REF_SHA256, i), "")).strip().lower()
    return out


def _pz_edges(header) -> np.ndarray | None:
    """The z edges of the PZ grid the PZ_* keywords describe (docs/pz.md), or None without them."""
    try:
        z0, dz, nbin = float(header[KW_PZ_Z0]), float(header[KW_PZ_DZ]), int(header[KW_PZ_NBIN])
    except (KeyError, TypeError, ValueError):
        return None
    if not (nbin >= 1 and dz > 0 and np.isfinite(z0)):
        return None
    x = z0 + dz * (np.arange(nbin + 1) - 0.5)
    return np.expm1(x) if str(header.get(KW_PZ_SPACE, "z")).strip() == "ln1pz" else x


def pz_rows(path: Path, rows) -> np.ndarray | None:
    """The PZ values of catalogue ``rows`` of an output (only those rows are read), or None."""
    from astropy.io import fits
    try:
        with fits.open(path, memmap=True) as hdul:
            data = hdul[EXT_REDSHIFT].data
            return np.array(data[PZ_COLUMN.name][np.asarray(rows, dtype=np.int64)], dtype=float)
    except (OSError, KeyError, ValueError):
        return None


def verify_output(path, expected: dict, ignore_checksum: bool = False) -> tuple[bool, str, dict]:
    """(ok, reason, info) for an existing output: checksums of every HDU and provenance.

    An output made from an input whose checksum failed (``INCHKSUM = 'FAILED'``) is kept only
    by a run that ignores checksums too. ``info`` (when ok) has n_objects, zwarn counts and
    status read from the file.
    """
    import warnings

    from astropy.io import fits

    from ..quality import zwarn_counts
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")           # astropy warns on a bad checksum; we report it
            with fits.open(path, checksum=True, memmap=True) as hdul:
                for i, hdu in enumerate(hdul):      # raw bytes, memory-mapped: the data is not decoded
                    if not verify_checksums(hdu, datasum=False).checksum:
                        return False, f"HDU {i} of {path.name} fails its checksum", {}
                names = [h.name for h in hdul]
                if EXT_REDSHIFT not in names:
                    return False, f"{path.name} has no {EXT_REDSHIFT} extension", {}
                hdr = hdul[EXT_REDSHIFT].header
                have = {k: hdr[k] for k in hdr if k.startswith(PROVENANCE_MATCH_PREFIXES)}
                for key in sorted(set(have) | set(expected)):
                    if have.get(key) != expected.get(key):
                        return False, (f"{path.name} was made with {key} = {have.get(key)!r}, "
                                       f"this run uses {expected.get(key)!r}"), {}
                if hdr.get(KW_INPUT_CHECKSUM) == "FAILED" and not ignore_checksum:
                    return False, f"{path.name} was made from an input that fails its FITS checksum", {}
                zwarn = np.asarray(hdul[EXT_REDSHIFT].data["ZWARN"])
                info = {"n_objects": int(zwarn.size), "zwarn": zwarn_counts(zwarn),
                        "status": str(hdr.get(KW_STATUS, ""))}
    except Exception as exc:                          # unreadable, truncated, not FITS
        return False, f"{path.name} is unreadable ({type(exc).__name__}: {exc})".replace("\n", " "), {}
    return True, "", info
