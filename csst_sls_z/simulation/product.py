"""Write simulated spectra as Layout A products (docs/products.md) with a TRUTH table.

The writer streams: objects are appended to the tables chunk by chunk, so a 100,000-object
product never sits in memory whole. No date is written, so one seed gives the same bytes.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import fitsio
import numpy as np

from ..durable import TempFile
from ..datamodel import (BANDS_USED, COL_DEC, COL_ERR, COL_FLUX, COL_OBJID, COL_RA, COL_WAVE,
                         EXT_SPEC, EXT_TRUTH, FLUX_UNIT, KW_MAGBAND, MAG_NORM_BAND, PRIMARY_KEYS, TRUTH_COLUMNS,
                         WAVE_UNIT)

log = logging.getLogger(__name__)

def _truth_field(c):
    repeat = int(c.fits_format[:-1] or 1)
    dtype = c.dtype.replace("U", "S")
    return (c.name, dtype, (repeat,)) if repeat > 1 and not dtype.startswith("S") else (c.name, dtype)


TRUTH_DTYPE = np.dtype([_truth_field(c) for c in TRUTH_COLUMNS])


def spec_dtype(n_pix: int) -> np.dtype:
    return np.dtype([(COL_OBJID, "i8"), (COL_RA, "f8"), (COL_DEC, "f8"),
                     (COL_WAVE, "f4", (n_pix,)), (COL_FLUX, "f4", (n_pix,)), (COL_ERR, "f4", (n_pix,))])


def truth_rows(sim) -> np.ndarray:
    pop = sim.population
    rows = np.zeros(len(sim), dtype=TRUTH_DTYPE)
    rows["OBJID"] = sim.objid
    rows["Z_TRUE"] = pop.z
    rows["MAG_NORM"] = pop.mag
    rows["R_EFF"] = pop.r_eff
    rows["SERSIC_N"] = pop.sersic_n
    rows["AXIS_RATIO"] = pop.axis_ratio
    rows["PA"] = pop.pa
    rows["SED_LIB"] = pop.sed_lib
    rows["SED_INDEX"] = pop.sed_index
    rows["SED_COEFF"] = pop.sed_coeff
    rows["WAVE_SHIFT_GV"] = sim.bands["GV"].shift
    rows["WAVE_SHIFT_GI"] = sim.bands["GI"].shift
    rows["SNR_GV"] = sim.bands["GV"].snr
    rows["SNR_GI"] = sim.bands["GI"].snr
    rows["SED_PARAM"] = pop.sed_param
    for name, values in sim.variations.items():
        rows[name.upper()] = values
    return rows


def band_rows(sim, band: str, ra, dec) -> np.ndarray:
    b = sim.bands[band]
    keep = np.where(b.present)[0]
    rows = np.zeros(keep.size, dtype=spec_dtype(b.wave.size))
    rows[COL_OBJID] = sim.objid[keep]
    rows[COL_RA] = ra[keep]
    rows[COL_DEC] = dec[keep]
    rows[COL_WAVE] = b.wave.astype(np.float32)[None, :]
    rows[COL_FLUX] = b.flux[keep]
    rows[COL_ERR] = b.err[keep]
    return rows


class ProductWriter:
    """Append chunks of simulated spectra to one Layout A product, then close atomically.

    Each extension grows in its own staging file, where an append lands at the end of the
    file; appending to an HDU that other HDUs follow makes cfitsio shift them all, which
    made writing quadratic in the number of chunks. ``close`` copies the staged tables
    into the product chunk by chunk, so I/O stays linear and memory flat.
    """

    COPY_ROWS = 2000

    def __init__(self, path: Path, primary_cards: dict, overwrite: bool = False, truth_cards: dict | None = None):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists; refusing to overwrite it (use --overwrite)")
        # cfitsio creates the file itself (it cannot open an empty one): a free name, unlocked
        self._tmp = TempFile(self.path, create=False)
        self.tmp = str(self._tmp.path)
        self.header = [{"name": k, "value": v} for k, v in PRIMARY_KEYS.items()]
        self.header += [{"name": k, "value": v[0], "comment": v[1]} for k, v in primary_cards.items()]
        self.order = [EXT_SPEC[b] for b in BANDS_USED] + [EXT_TRUTH]
        self.stage = {ext: f"{self.tmp}.{ext}" for ext in self.order}
        self.staged = {}
        self.units = {}
        self.truth_cards = dict(truth_cards or {})

    def _append(self, ext: str, rows: np.ndarray, units=None):
        if ext not in self.staged:
            self.staged[ext] = fitsio.FITS(self.stage[ext], "rw", clobber=True)
            self.staged[ext].write(rows, extname=ext, units=units)
            self.units[ext] = units
        else:
            self.staged[ext][ext].append(rows)

    def append(self, sim, ra, dec):
        for band in BANDS_USED:
            rows = band_rows(sim, band, ra, dec)
            self._append(EXT_SPEC[band], rows, units=["", "deg", "deg", WAVE_UNIT, FLUX_UNIT, FLUX_UNIT])
        self._append(EXT_TRUTH, truth_rows(sim),
                     units=[c.unit for c in TRUTH_COLUMNS])

    def close(self):
        with fitsio.FITS(self.tmp, "rw") as out:
            out.write(None, header=self.header)
            for ext in self.order:
                if ext not in self.staged:
                    continue
                src = self.staged[ext][ext]
                n = src.get_nrows()
                for start in range(0, max(n, 1), self.COPY_ROWS):
                    rows = src[start:min(n, start + self.COPY_ROWS)]
                    if start == 0:
                        out.write(rows, extname=ext, units=self.units[ext])
                        if ext == EXT_TRUTH:
                            out[ext].write_key(KW_MAGBAND, MAG_NORM_BAND,
                                               "MAG_NORM: photon-weighted AB through this grating")
                            for key, (value, comment) in self.truth_cards.items():
                                out[ext].write_key(key, value, comment)
                    else:
                        out[ext].append(rows)
        self._drop_staging()
        # cfitsio stamps the clock time into the CHECKSUM comment; astropy's checksum with a
        # fixed comment keeps "same seed, same bytes".
        from astropy.io import fits as afits
        with afits.open(self.tmp, mode="update", memmap=True) as hdul:
            for hdu in hdul:
                hdu.add_checksum(when="HDU checksum")
        os.chmod(self.tmp, 0o644)
        return self._tmp.commit()

    def _drop_staging(self):
        for ext, f in self.staged.items():
            f.close()
        self.staged = {}
        for path in self.stage.values():
            if os.path.exists(path):
                os.unlink(path)

    def abort(self):
        try:
            self._drop_staging()
        finally:
            self._tmp.discard()
