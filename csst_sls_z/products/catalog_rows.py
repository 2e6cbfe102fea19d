"""The SLS_REDSHIFT rows of one output, kept on disk chunk by chunk (memory flat in file size).

The stage measures a file a chunk at a time. Each chunk's rows are appended, already in
FITS's big-endian row layout, to an anonymous temporary file in the output's directory (the
operating system deletes it when it is closed, however the process ends), and
:func:`.writer.write_redshift_product` copies them into the output in blocks, as it copies
the input's extensions. So the catalogue is in memory one chunk at a time, not whole: with
the PZ column (1.6 kB per object with 400 bins) that was the part of the stage's memory that
grew with the file. Only ZWARN (4 bytes per object) is kept whole, for the file's summary.

The rows file is a FITS file of its own (an empty primary HDU and the SLS_REDSHIFT table),
so the writer opens it with astropy like any input, and the output's table header is made
by the same code as before: outputs are byte for byte those of an in-memory catalogue
(``tests/test_products.py::test_catalogue_rows_on_disk_are_the_in_memory_catalogue``).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..datamodel import EXT_REDSHIFT, redshift_columns

_BLOCK = 2880          # FITS records


def _pad(nbytes: int) -> int:
    return -nbytes % _BLOCK


class CatalogRows:
    """``n`` SLS_REDSHIFT rows (PZ with ``n_pz`` values, or none), appended in object order by
    :meth:`append` and handed to the writer whole by :meth:`hdu`.

    ``directory``: where the rows file lives (the output's, so its space is the output's);
    an OSError from it says which output it was for. Use as a context manager, or
    :meth:`close` it: the file goes with it.
    """

    def __init__(self, n: int, n_pz: int | None = None, directory: Path | None = None, label: str = ""):
        self.n = int(n)
        self.label = label or str(directory or tempfile.gettempdir())
        self.columns = redshift_columns(n_pz)
        self.dtype = np.dtype([(c.name, np.dtype(c.dtype).newbyteorder(">"), (int(n_pz),) if c.vector else ())
                               for c in self.columns])
        self.zwarn = np.zeros(self.n, np.int32)
        self.written = 0
        self._hdul = None
        header = fits.BinTableHDU.from_columns(
            [fits.Column(name=c.name, format=c.fits_format, unit=c.unit or None) for c in self.columns],
            nrows=0, name=EXT_REDSHIFT).header
        if header["NAXIS1"] != self.dtype.itemsize:
            raise ValueError(f"row layout mismatch: FITS {header['NAXIS1']} bytes, numpy {self.dtype.itemsize}")
        header["NAXIS2"] = self.n
        try:
            self._file = tempfile.TemporaryFile(dir=directory, prefix=".csst_sls_z-rows-")
            self._file.write(fits.PrimaryHDU().header.tostring().encode("ascii"))
            self._file.write(header.tostring().encode("ascii"))
        except OSError as exc:
            raise self._error(exc) from None

    def _error(self, exc: OSError) -> OSError:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return type(exc)(f"cannot keep the catalogue rows of {self.label} in its directory ({reason})")

    def append(self, rows: np.ndarray) -> None:
        """The next ``len(rows)`` rows: a structured array with every column (any byte order)."""
        k = len(rows)
        if self.written + k > self.n:
            raise ValueError(f"{self.written + k} rows appended to a catalogue of {self.n}")
        out = np.empty(k, self.dtype)
        for name in self.dtype.names:
            out[name] = rows[name]
        try:
            self._file.write(out.tobytes())
        except OSError as exc:
            raise self._error(exc) from None
        self.zwarn[self.written:self.written + k] = rows["ZWARN"]
        self.written += k

    def hdu(self) -> fits.BinTableHDU:
        """The SLS_REDSHIFT table HDU over the rows file, its data unread (the writer copies it in
        blocks: :func:`.writer._stream_copy`). Every row must have been appended."""
        if self.written != self.n:
            raise ValueError(f"only {self.written} of {self.n} catalogue rows were appended")
        if self._hdul is None:
            try:
                self._file.write(b"\0" * _pad(self.n * self.dtype.itemsize))
                self._file.flush()
            except OSError as exc:
                raise self._error(exc) from None
            self._reader = os.fdopen(os.dup(self._file.fileno()), "rb")
            self._hdul = fits.open(self._reader, mode="readonly", memmap=False, lazy_load_hdus=True)
        return self._hdul[1]

    def fileno(self) -> int:
        return self._file.fileno()

    def __len__(self) -> int:
        return self.n

    def close(self) -> None:
        if self._hdul is not None:
            self._hdul.close()
            self._reader.close()
            self._hdul = None
        try:
            self._file.close()
        except OSError:        # a full disk again, flushing rows nobody will read: the caller has the error
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
