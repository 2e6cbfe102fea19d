"""Writing the SLS_REDSHIFT product.

:func:`write_redshift_product` writes the input's primary header plus provenance, the
input's extensions unchanged (unless ``catalog_only``) and SLS_REDSHIFT, with checksums,
atomically (:class:`csst_sls_z.durable.TempFile`: a locked temporary file in the target
directory, then a rename, or without ``overwrite`` an exclusive hard link).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

from ..datamodel import EXT_REDSHIFT, PZ_COLUMN, redshift_columns
from ..durable import TempFile, name_max
from .catalog_rows import CatalogRows
from .fitsutil import ProductError, log, one_line, os_reason, warnings_to_log
from .reader import ProductReader


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


def _catalog_hdu(catalog, cards) -> fits.BinTableHDU:
    if isinstance(catalog, CatalogRows):           # rows kept on disk by the stage: copied in blocks
        hdu = catalog.hdu()
        _stream_copy(hdu, catalog.fileno())
        return _described(hdu, catalog.columns, cards)
    names = catalog.dtype.names or ()
    # The optional PZ column (datamodel.OPTIONAL_REDSHIFT_COLUMNS): its length is the catalogue's.
    pz_shape = catalog.dtype[PZ_COLUMN.name].shape if PZ_COLUMN.name in names else ()
    expected = redshift_columns(pz_shape[0] if len(pz_shape) == 1 else None)
    catalog = np.asarray(catalog)
    missing = [c.name for c in expected if c.name not in names]
    extra = [n for n in names if n not in {c.name for c in expected}]
    if missing or extra:
        raise ValueError(f"catalog does not match the SLS_REDSHIFT data model "
                         f"(missing {missing or 'none'}, unknown {extra or 'none'})")
    columns = [fits.Column(name=c.name, format=c.fits_format, unit=c.unit or None,
                           array=np.asarray(catalog[c.name], dtype=c.dtype))
               for c in expected]
    hdu = fits.BinTableHDU.from_columns(columns, name=EXT_REDSHIFT)
    return _described(hdu, expected, cards)


def _described(hdu: fits.BinTableHDU, columns, cards) -> fits.BinTableHDU:
    """The SLS_REDSHIFT header's column comments and ``cards`` on ``hdu``."""
    for i, c in enumerate(columns, start=1):
        hdu.header.comments[f"TTYPE{i}"] = c.header_comment   # short enough to stay whole in the card
    _add_cards(hdu.header, cards)
    return hdu


def _write_hdulist(hdul: fits.HDUList, tmp: Path) -> None:
    """Write with checksums on every HDU. Separate so tests can make it fail half-way."""
    with warnings.catch_warnings():
        # Long comments are cut to fit a card; values are never cut.
        warnings.filterwarnings("ignore", message="Card is too long", category=VerifyWarning)
        hdul.writeto(tmp, overwrite=True, checksum=True, output_verify="fix+warn")


# What astropy raises for an input HDU it cannot re-read or re-encode (cfitsio may have read it).
_INPUT_COPY_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, fits.VerifyError)
_CORRUPTED_HDU = getattr(getattr(fits.hdu, "base", None), "_CorruptedHDU", ())


# Input extensions are copied in blocks of this size (a multiple of 4 bytes, the checksum's word).
_COPY_BLOCK = 1 << 23
# False: copy through astropy's memory map as before (benchmarks/bench_head.py --memory compares).
STREAM_COPY = True


def _pread_full(fd: int, size: int, offset: int) -> bytes:
    parts, done = [], 0
    while done < size:
        buf = os.pread(fd, size - done, offset + done)
        if not buf:
            raise ValueError(f"the input ends {size - done} bytes before the end of an extension's data")
        parts.append(buf)
        done += len(buf)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _stream_copy(hdu, fd: int) -> None:
    """Copy ``hdu``'s data (and compute its DATASUM) by reading the input ``fd`` in blocks.

    astropy copies an unread input HDU through a memory map of its whole data area, and so
    does its DATASUM; the mapped pages stay resident, so the writer's peak memory (VmHWM)
    grew by the size of the input. Here the same bytes are read with ``pread`` in 8 MiB
    blocks and handed to astropy's own writer and checksum (``_compute_checksum`` chains
    over blocks of whole 32-bit words), so the output is byte for byte what it was and
    the memory of the copy is one block. Only for plain table and image HDUs whose data was
    not read (``hdu.data`` untouched); anything else is left to astropy as before.
    """
    if (type(hdu) not in (fits.BinTableHDU, fits.TableHDU, fits.ImageHDU) or hdu._data_loaded
            or getattr(hdu, "_data_needs_rescale", True)
            or not isinstance(hdu._data_offset, int) or not isinstance(hdu._data_size, int)):
        return
    offset, size = hdu._data_offset, hdu._data_size
    astropy_datasum = hdu._calculate_datasum

    def blocks():
        for start in range(0, size, _COPY_BLOCK):
            yield _pread_full(fd, min(_COPY_BLOCK, size - start), offset + start)

    def calculate_datasum():
        if hdu._data_loaded:             # something read the data meanwhile: astropy writes that
            return astropy_datasum()
        if hdu.size <= 0:
            return 0
        total = 0
        for buf in blocks():
            total = hdu._compute_checksum(np.frombuffer(buf, dtype=np.ubyte), total)
        return total

    def writedata_direct_copy(fileobj):
        written = 0
        for buf in blocks():
            fileobj.write(buf)
            written += len(buf)
        return written

    hdu._calculate_datasum = calculate_datasum
    hdu._writedata_direct_copy = writedata_direct_copy


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


def write_redshift_product(out_path, input_path, catalog,
                           header_cards: list[tuple[str, object, str]],
                           catalog_only: bool = False, overwrite: bool = False,
                           source: ProductReader | None = None) -> Path:
    """Write the output product: input primary header + provenance, input extensions, SLS_REDSHIFT.

    ``catalog``: the SLS_REDSHIFT rows, an array with the data model's columns or a filled
    :class:`.catalog_rows.CatalogRows` (the stage's: rows on disk, copied in blocks).
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
    limit = name_max(out_path.parent) if out_path.parent.is_dir() else 255
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
                        f"({os_reason(exc) or one_line(exc)})") from None
    try:
        with warnings_to_log(input_path, source.identity if source is not None else None):
            _write_output(out_path, input_path, tmp.path, cat_hdu, header_cards, catalog_only, source)
        if source is not None:
            if not source.unchanged():
                raise ProductError(changed)
            if source.replaced():
                log.warning("input product %s was replaced by another file during the run; the output is "
                            "made from the file that was opened and measured (sha256 %s)", input_path,
                            source.sha256())
        tmp.commit(exclusive=not overwrite)
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
            # Uncompressed input: the extensions' data are copied in blocks read from the opened
            # descriptor, not through a memory map of the whole file (_stream_copy).
            fd = source.fileno() if source is not None and not source.compressed else None
            for i, hdu in enumerate(src[1:], start=1):
                if isinstance(hdu, _CORRUPTED_HDU):
                    raise ProductError(f"input product {input_path} has a corrupt HDU {i} that cannot be "
                                       f"copied into the output")
                if str(hdu.header.get("EXTNAME", "")).strip().upper() == EXT_REDSHIFT:
                    continue   # a previous run's catalogue is replaced, not kept
                if fd is not None and STREAM_COPY:
                    _stream_copy(hdu, fd)
                out.append(hdu)
    except BaseException as exc:
        if src is not None:
            src.close()
        if isinstance(exc, ProductError) or not isinstance(exc, _INPUT_COPY_ERRORS + (OSError,)):
            raise
        raise ProductError(f"input product {input_path} cannot be read to copy it into the output "
                           f"({one_line(exc) or type(exc).__name__})") from None
    try:
        out.append(cat_hdu)
        try:
            _write_hdulist(out, tmp)
        except OSError as exc:        # disk full, quota, I/O error: name the output, one sentence
            raise type(exc)(f"cannot write output {out_path} ({os_reason(exc) or one_line(exc)})") from None
        except _INPUT_COPY_ERRORS as exc:
            # astropy cannot re-encode an input HDU that cfitsio read (a corrupt card or header)
            raise ProductError(f"input product {input_path} has an extension that cannot be copied into "
                               f"the output ({one_line(exc) or type(exc).__name__})") from None
    finally:
        src.close()
