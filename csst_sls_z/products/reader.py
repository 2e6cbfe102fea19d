"""The input reader: open a product, find its layout, join its bands by OBJID, read chunks.

:func:`open_product` accepts every registered layout (``layout.py``). Objects are joined
across bands by OBJID. Their order (the order of the output catalogue) is that of first
appearance: the GV objects in GV row (HDU) order, then the objects only in GI in GI
order. An OBJID repeated within one band keeps its first row; the repeated ids are
listed in ``ProductReader.duplicate_objids``.

OBJID, RA and DEC are read at open time; the spectra are read lazily, one chunk of objects
at a time (:meth:`ProductReader.iter_chunks`), so memory stays flat however large the file.
Bad pixel values (NaN, ERR <= 0, unsorted wavelengths) are passed through unchanged:
repairing them is the preprocessing's job. The file is opened once: hashing, measuring
and copying go through that descriptor.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import fitsio
import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

from ..datamodel import BANDS_USED, COL_ERR, COL_FLUX, COL_WAVE, FLUX_UNIT, KW_INPUT_CHECKSUM, KW_UNITS_ASSUMED, WAVE_UNIT
from .fitsutil import (GZIP_MAGIC, ColSpec, ProductError, cfitsio_reason, log, one_line, read_raw, table_info,
                       verify_checksums, warn_once, warnings_to_log)
from .layout import Layout, detect_layout


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



class ProductReader:
    """An open input product: object ids and positions now, spectra chunk by chunk.

    Attributes: ``path``, ``layout`` (the name of its Layout: 'A' or 'B'), ``primary_header``,
    ``objid`` (int64, union over GV and GI in order of first appearance), ``ra``/``dec``
    (float64, NaN where absent), ``n_objects``, ``duplicate_objids`` (ids repeated within
    one band table; the first occurrence is the one used), ``units_assumed`` (the
    spectrum columns without TUNIT), ``checksum_state`` (VALID, ABSENT or FAILED).

    The file is opened once and that descriptor is kept: its sha256 (:meth:`sha256`) and
    the copy into the output (:meth:`copy_source`) read the very file that was measured,
    even if another file is renamed over the path meanwhile; :meth:`unchanged` tells
    whether it was modified in place since it was opened. A file whose CHECKSUM or
    DATASUM fails is refused unless ``ignore_checksum``.

    What layouts (``layout.py``) and the writer use of the opened file: :meth:`hdu`,
    :meth:`read_stored_column`, :meth:`memmap`, :meth:`fileno`, ``compressed``,
    ``identity``, and to report, :meth:`warn` and :meth:`note_assumed_units`.
    """

    def __init__(self, path: os.PathLike | str, ignore_checksum: bool = False):
        self.path = Path(path)
        self._fits = None
        self._fh = None
        self._sources: dict[str, Layout] = {}
        self._tables: dict[int, dict] = {}
        self._sha256 = None
        self._inflight = None
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
        self.compressed = magic[:2] == GZIP_MAGIC
        if not self.compressed and not magic.startswith(b"SIMPLE  ="):
            self.close()
            raise ProductError(f"input product {self.path} is not a FITS file (it does not begin with SIMPLE)")
        try:
            with warnings_to_log(self.path, self.identity):
                self._fits = fitsio.FITS(str(self.path), "r")   # read-only: the input is never modified
        except Exception as exc:
            self.close()
            raise ProductError(f"input product {self.path} is not a readable FITS file "
                               f"({cfitsio_reason(exc)})") from None
        if self.replaced():       # cfitsio opened the path after our descriptor: it must be the same file
            self.close()
            raise ProductError(f"input product {self.path} was replaced by another file while it was being "
                               f"opened; run again")
        try:
            with warnings_to_log(self.path, self.identity):
                self._open()
        except ProductError:
            self.close()
            raise
        except Exception as exc:  # anything cfitsio/astropy throws at a malformed file
            self.close()
            raise ProductError(f"input product {self.path} is malformed ({one_line(cfitsio_reason(exc))})") from None

    # -- the file that was opened (what layouts and the writer use)
    @property
    def identity(self) -> tuple:
        """(device, inode, size, mtime) of the opened file: a message is logged once per identity."""
        st = self._stat
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def warn(self, msg: str, *args) -> None:
        """log.warning(msg % args), once per opened file and message."""
        warn_once(self.identity, msg, *args)

    def hdu(self, index: int):
        """HDU ``index`` of the opened file, a fitsio HDU (``read_header``, ``read``, ``read_column``, ...)."""
        return self._fits[index]

    def read_stored_column(self, hdu_index: int, spec: ColSpec, rows: np.ndarray, where: str, raw: bool = False):
        """The stored numbers of one column for ``rows`` (sorted), read from the file's bytes with
        TSCAL/TZERO/TNULL applied unless ``raw`` (:func:`.fitsutil.read_raw`: cfitsio gets scaled
        integer columns wrong). ``where`` names the table in messages."""
        info = self._tables.get(hdu_index)
        if info is None and not self.compressed and spec.offset is not None:
            info = self._tables[hdu_index] = table_info(self._fits, self._fh, hdu_index)
        return read_raw(self.path, self._fh, self.compressed, info, spec, rows, where, raw=raw)

    def memmap(self, offset: int, shape) -> np.memmap:
        """A read-only uint8 memory map of the opened file's bytes (uncompressed files only: see ``compressed``)."""
        return np.memmap(self._fh, dtype=np.uint8, mode="r", offset=offset, shape=shape)

    def fileno(self) -> int:
        """The descriptor of the opened file (its bytes are the FITS file's unless ``compressed``)."""
        return self._fh.fileno()

    def note_assumed_units(self, where: str, columns) -> None:
        """Record that ``columns`` of ``where`` have no TUNIT (the documented units are assumed)."""
        if columns:
            self.units_assumed.append(f"{', '.join(columns)} of {where}")

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

    def _verify_checksums(self) -> None:
        """CHECKSUM / DATASUM of every HDU that has them: refused on failure unless ``ignore_checksum``."""
        present, failed = False, []
        for i in range(len(self._fits)):
            try:
                check = verify_checksums(self._fits[i])
            except Exception as exc:                     # a damaged CHECKSUM/DATASUM card
                present = True
                failed.append(f"HDU {i} ({self._hdu_name(i)}) has CHECKSUM/DATASUM cards that cannot be checked "
                              f"({cfitsio_reason(exc)})")
                continue
            present = present or check.present
            if check.datasum is False:
                failed.append(f"HDU {i} ({self._hdu_name(i)}) has a DATASUM that does not match its data")
            elif check.checksum is False:
                failed.append(f"HDU {i} ({self._hdu_name(i)}) has a CHECKSUM that does not match its header "
                              f"and data")
        self.checksum_state = "FAILED" if failed else "VALID" if present else "ABSENT"
        if failed:
            more = f" (and {len(failed) - 1} more HDU(s))" if len(failed) > 1 else ""
            if not self.ignore_checksum:
                raise ProductError(f"input product {self.path} fails its FITS checksum: {failed[0]}{more}, so "
                                   f"the file is corrupt (--ignore-checksum processes it anyway)")
            self.warn("%s fails its FITS checksum: %s%s; processed anyway (ignore_checksum), the output "
                      "says %s = 'FAILED'", self.path, failed[0], more, KW_INPUT_CHECKSUM)

    def _hdu_name(self, index: int) -> str:
        return (self._fits[index].get_extname() or "").strip() or ("primary" if index == 0 else "no EXTNAME")

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
        layout, self._sources = detect_layout(self, hdus)
        self.layout = layout.name
        self._join()
        if self.units_assumed:
            self.warn("%s: no TUNIT for %s; assuming %s in %s and %s, %s in %s (the output says %s = T)",
                      self.path, "; ".join(self.units_assumed), COL_WAVE, WAVE_UNIT, COL_FLUX, COL_ERR,
                      FLUX_UNIT, KW_UNITS_ASSUMED)
        counts = ", ".join(f"{b} {len(s.ids)}" for b, s in self._sources.items())
        log.info("opened %s: layout %s, %d objects (rows: %s)", self.path, self.layout, self.n_objects, counts)

    def _check_complete(self) -> None:
        """Fail now on a truncated file, rather than in the middle of a run.

        cfitsio opens a file cut inside an HDU's data, and silently stops at an
        extension whose header is cut; compare what the headers promise with the size.
        """
        if self.compressed:
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
            self.warn("%s has %d bytes after its last HDU; they are ignored", self.path, size - end)

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
            self.warn("%s: %d OBJID(s) occur more than once in one band table (e.g. %s); the first "
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

    def iter_chunks(self, chunk_size: int, prefetch: bool = False) -> Iterator[tuple[slice, dict[str, BandData]]]:
        """Yield ``(slice of the object order, {'GV': BandData, 'GI': BandData})`` chunk by chunk.

        ``prefetch``: from the second chunk on, read chunk k + 1 in a background thread
        while the caller works on chunk k (the reads are ``pread`` calls, cfitsio and
        numpy, and TensorFlow releases the GIL while it computes). The same chunks in the
        same order; at most one chunk is read ahead, so memory holds two chunks, not one.
        The first two chunks are read in turn: the caller's first chunk is where its
        one-time work happens (TensorFlow traces its functions), and that may enter
        ``warnings.catch_warnings``, which is not thread-safe and which the reads use
        (``fitsutil.warnings_to_log``). :meth:`close` waits for a read in flight before
        it closes the file.
        """
        chunk_size = int(chunk_size)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if self._fits is None:
            raise ValueError(f"product {self.path} is closed")
        slices = [slice(start, min(start + chunk_size, self.n_objects))
                  for start in range(0, self.n_objects, chunk_size)]
        pool, ahead = None, None
        try:
            for k, sl in enumerate(slices):
                # a reading error is raised here, in the caller's thread, at the chunk it concerns
                bands = ahead.result() if ahead is not None else self._read_chunk(sl)
                ahead = self._inflight = None
                if prefetch and k >= 1 and k + 1 < len(slices):
                    if pool is None:
                        from concurrent.futures import ThreadPoolExecutor
                        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="csst_sls_z-read")
                    ahead = self._inflight = pool.submit(self._read_chunk, slices[k + 1])
                yield sl, bands
        finally:
            self._wait_inflight()
            if pool is not None:
                pool.shutdown(wait=True)

    def _read_chunk(self, sl: slice) -> dict[str, BandData]:
        if self._fits is None:
            raise ValueError(f"product {self.path} is closed")
        return {band: self.read_band(band, sl) for band in BANDS_USED}

    def _wait_inflight(self) -> None:
        """Let a chunk read ahead by :meth:`iter_chunks` finish (its result or error is dropped)."""
        fut, self._inflight = getattr(self, "_inflight", None), None
        if fut is not None:
            try:
                fut.result()
            except BaseException:   # noqa: BLE001 - the reader is being abandoned; the caller has its own error
                pass

    def close(self) -> None:
        self._wait_inflight()      # a read ahead still running must not see the file closed under it
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


def open_product(path: os.PathLike | str, ignore_checksum: bool = False) -> ProductReader:
    """Open an input product of layout A or B; raises ProductError if it is unreadable or, unless
    ``ignore_checksum``, if a CHECKSUM/DATASUM fails."""
    return ProductReader(path, ignore_checksum=ignore_checksum)
