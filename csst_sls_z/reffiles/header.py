"""Reading and writing single reference files: the common FITS header and its checks.

Every reference file is a FITS file whose primary header records what it is
(REFTYPE), where it came from (PEDIGREE, AUTHOR, HISTORY), the schema version the
code must know (SCHEMAV) and a one-line description. Sets of files and their
manifest live in ``reference.py``.
"""
from __future__ import annotations

import datetime as _dt
import os
import warnings
from pathlib import Path

from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

from .. import __version__
from ..durable import TempFile
from ..datamodel import PEDIGREES, REFFILE_SCHEMA_VERSION, REFTYPES

DEFAULT_AUTHOR = "csst_sls_z developers"


class ReferenceFileError(Exception):
    """A reference file is missing, corrupt or of the wrong kind (one-sentence message)."""


def reference_header(reftype: str, pedigree: str, descrip: str, history=(),
                     author: str = DEFAULT_AUTHOR) -> fits.Header:
    if reftype not in REFTYPES:
        raise ValueError(f"unknown reference type {reftype!r}")
    if pedigree not in PEDIGREES:
        raise ValueError(f"unknown pedigree {pedigree!r}")
    hdr = fits.Header()
    hdr["REFTYPE"] = (reftype, "reference file type")
    hdr["PEDIGREE"] = (pedigree, "SIMULATION or DUMMY")
    hdr["AUTHOR"] = (author, "who made this file")
    hdr["SCHEMAV"] = (REFFILE_SCHEMA_VERSION, "reference-file schema version")
    hdr["DESCRIP"] = (descrip[:68], "what this file is")
    hdr["USEAFTER"] = ("2024-01-01T00:00:00", "valid for data taken after")
    hdr["DATE"] = (_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), "file creation (UTC)")
    hdr["CREATOR"] = (f"csst_sls_z {__version__}", "software that wrote this file")
    for line in history:
        hdr.add_history(str(line))
    return hdr


def write_fits_atomic(hdul: fits.HDUList, path: os.PathLike, overwrite: bool = False) -> Path:
    """Write with checksums under a temporary name in the target directory, then rename
    (:class:`csst_sls_z.durable.TempFile`)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; refusing to overwrite it")
    with TempFile(path) as tmp:
        with warnings.catch_warnings():
            # Long comments are cut to fit a card; the values are never cut.
            warnings.filterwarnings("ignore", message="Card is too long", category=VerifyWarning)
            hdul.writeto(tmp.path, overwrite=True, checksum=True)
        os.chmod(tmp.path, 0o644)     # reference files are shared read-only data
        tmp.commit()
    return path


def verify_reference_file(path: os.PathLike, reftype: str) -> None:
    """Check a reference file on its own (no manifest): readable FITS, its REFTYPE, a schema version
    this code knows, and the CHECKSUM and DATASUM of every HDU, which must be present and hold."""
    path = Path(path)
    if not path.is_file():
        raise ReferenceFileError(f"reference file {path} ({reftype}) is missing")
    from ..products.fitsutil import verify_checksums   # here, not at import: reffiles sits below products
    with open_reference_file(path, reftype) as hdul:
        for i, hdu in enumerate(hdul):
            if "CHECKSUM" not in hdu.header or "DATASUM" not in hdu.header:
                raise ReferenceFileError(f"reference file {path} ({reftype}) has no CHECKSUM/DATASUM in HDU {i}, "
                                         f"so its integrity cannot be checked")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    check = verify_checksums(hdu)
                    ok = check.datasum and check.checksum
                except Exception as exc:   # astropy cannot read the data to sum it
                    raise ReferenceFileError(f"reference file {path} ({reftype}) cannot be checked: HDU {i} "
                                             f"is unreadable ({' '.join(str(exc).split())})") from None
            if not ok:
                raise ReferenceFileError(f"reference file {path} ({reftype}) fails its FITS checksum in HDU {i}, "
                                         f"so it is corrupt")


def open_reference_file(path: os.PathLike, reftype: str) -> fits.HDUList:
    """Open a reference file and check that it says it is one of ``reftype`` in a known schema."""
    path = Path(path)
    if not path.is_file():
        raise ReferenceFileError(f"reference file {path} for type {reftype!r} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # astropy's own warnings on a damaged file
            hdul = fits.open(path, memmap=False)
            hdr = hdul[0].header
    except Exception as exc:  # astropy raises many kinds for a broken file
        raise ReferenceFileError(f"reference file {path} is not a readable FITS file "
                                 f"({' '.join(str(exc).split())})") from None
    if hdr.get("REFTYPE") != reftype:
        hdul.close()
        raise ReferenceFileError(
            f"reference file {path} has REFTYPE={hdr.get('REFTYPE')!r}, expected {reftype!r}")
    schema = hdr.get("SCHEMAV", -1)
    if isinstance(schema, bool) or not isinstance(schema, int):
        hdul.close()
        raise ReferenceFileError(f"reference file {path} has SCHEMAV = {schema!r}, not an integer")
    if schema > REFFILE_SCHEMA_VERSION:
        hdul.close()
        raise ReferenceFileError(
            f"reference file {path} has schema version {schema}, newer than this code "
            f"knows ({REFFILE_SCHEMA_VERSION}); upgrade csst_sls_z")
    return hdul
