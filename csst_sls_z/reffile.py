"""Reading and writing single reference files: the common FITS header and its checks.

Every reference file is a FITS file whose primary header records what it is
(REFTYPE), where it came from (PEDIGREE, AUTHOR, HISTORY), the schema version the
code must know (SCHEMAV) and a one-line description. Sets of files and their
manifest live in ``reference.py``.
"""
from __future__ import annotations

import datetime as _dt
import os
import tempfile
import warnings
from pathlib import Path

from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

from . import __version__
from .durable import commit
from .datamodel import PEDIGREES, REFFILE_SCHEMA_VERSION, REFTYPES

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
    """Write with checksums under a temporary name in the target directory, then rename."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; refusing to overwrite it")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            # Long comments are cut to fit a card; the values are never cut.
            warnings.filterwarnings("ignore", message="Card is too long", category=VerifyWarning)
            hdul.writeto(tmp, overwrite=True, checksum=True)
        os.chmod(tmp, 0o644)          # mkstemp makes 0600; reference files are shared read-only data
        commit(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def open_reference_file(path: os.PathLike, reftype: str) -> fits.HDUList:
    """Open a reference file and check that it says it is one of ``reftype`` in a known schema."""
    path = Path(path)
    if not path.is_file():
        raise ReferenceFileError(f"reference file {path} for type {reftype!r} does not exist")
    try:
        hdul = fits.open(path, memmap=False)
        hdr = hdul[0].header
    except Exception as exc:  # astropy raises many kinds for a broken file
        raise ReferenceFileError(f"reference file {path} is not a readable FITS file ({exc})") from None
    if hdr.get("REFTYPE") != reftype:
        raise ReferenceFileError(
            f"reference file {path} has REFTYPE={hdr.get('REFTYPE')!r}, expected {reftype!r}")
    if int(hdr.get("SCHEMAV", -1)) > REFFILE_SCHEMA_VERSION:
        raise ReferenceFileError(
            f"reference file {path} has schema version {hdr.get('SCHEMAV')}, newer than this code "
            f"knows ({REFFILE_SCHEMA_VERSION}); upgrade csst_sls_z")
    return hdul
