"""The CSST slitless instrument model, read from the ``instrument`` reference file.

No instrument number lives in code: :func:`build_instrument_file` writes the numbers of
docs/simulation.md (each with its source, estimates marked) and the GV/GI throughput
tables into a reference file, and :func:`load_instrument` reads them back.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..reffiles.header import open_reference_file, reference_header, write_fits_atomic

log = logging.getLogger(__name__)

# name: (value, unit, source, is_estimate). This table is the single source the
# instrument reference file is built from; docs/simulation.md reproduces it.
INSTRUMENT_PARAMETERS = {
    "GV_WMIN": (3800.0, "Angstrom", "CESS emulator parameters (Wen et al. 2024)", False),
    "GV_WMAX": (6600.0, "Angstrom", "CESS emulator parameters (Wen et al. 2024)", False),
    "GI_WMIN": (6100.0, "Angstrom", "CESS emulator parameters (Wen et al. 2024)", False),
    "GI_WMAX": (10500.0, "Angstrom", "CESS emulator parameters (Wen et al. 2024)", False),
    "GV_DISP": (7.1, "Angstrom/pix", "estimate from CESS regridding", True),
    "GI_DISP": (8.5, "Angstrom/pix", "estimate from CESS regridding", True),
    "GV_R": (250.0, "", "paper (R>=200); CESS parameters", False),
    "GI_R": (250.0, "", "paper (R>=200); CESS parameters", False),
    "PIXSCALE": (0.074, "arcsec/pixel", "CSST MSC documentation", False),
    "PSF_FWHM": (0.3, "arcsec", "paper section 2.1", False),
    "AREA": (float(np.pi * 100.0 ** 2), "cm2", "CESS parameters: 2 m aperture", False),
    "T_EXP": (150.0, "s", "paper: 4 x 150 s co-added", False),
    "N_EXP": (4.0, "", "paper: 4 x 150 s co-added", False),
    "GV_SKY": (0.214, "e-/s/pixel", "paper section 2.1", False),
    "GI_SKY": (0.329, "e-/s/pixel", "paper section 2.1", False),
    "DARK": (0.02, "e-/s/pixel", "CESS and the CSST simulator", False),
    "RDNOISE": (5.0, "e-/pixel/exp", "CESS and the CSST simulator", False),
    "SATURATE": (90000.0, "e-", "CESS and the CSST simulator", False),
    "PSFINR": (1.0, "", "1: R=250 is the point-source LSF, PSF included; 0: add PSF in quadrature", True),
    "AP_FRAC": (0.9, "", "extraction keeps about 90% of the light (simulation.md)", True),
    "APMINROW": (3.0, "pixel", "smallest extraction height; estimate", True),
    "APMAXROW": (81.0, "pixel", "largest extraction height; estimate", True),
    "DEPTH_GV": (23.4, "mag", "paper, quoting Gong et al. 2019 (5 sigma point source)", False),
    "DEPTH_GI": (23.2, "mag", "paper, quoting Gong et al. 2019 (5 sigma point source)", False),
}

THROUGHPUT_SOURCE = "CESS v0.8.5 csst_sls_tp/ first-order tables (Wen et al. 2024, MNRAS 528, 2770)"


@dataclass(frozen=True)
class Band:
    name: str
    wmin: float
    wmax: float
    dispersion: float          # Angstrom per detector pixel along the dispersion axis
    resolution: float          # R = lambda / FWHM
    sky: float                 # e-/s/pixel
    throughput_wave: np.ndarray = field(repr=False)
    throughput: np.ndarray = field(repr=False)

    @property
    def wavelength(self) -> np.ndarray:
        """Pixel centres of the 1D spectrum: wmin + k * dispersion up to wmax."""
        n = int(np.floor((self.wmax - self.wmin) / self.dispersion + 1e-9)) + 1
        return self.wmin + self.dispersion * np.arange(n)

    def throughput_at(self, wave: np.ndarray) -> np.ndarray:
        return np.interp(wave, self.throughput_wave, self.throughput, left=0.0, right=0.0)


@dataclass(frozen=True)
class Instrument:
    bands: dict
    params: dict
    path: str = ""

    def __getitem__(self, band: str) -> Band:
        return self.bands[band]

    def p(self, name: str) -> float:
        return float(self.params[name])


def build_instrument_file(source_dir: Path, out_path: Path, pedigree: str = "SIMULATION",
                          overwrite: bool = False) -> Path:
    """Build the instrument reference file from the CESS throughput tables in ``source_dir``."""
    hdr = reference_header(
        "instrument", pedigree, "CSST slitless GV/GI instrument model for simulation",
        history=[f"Throughputs: {THROUGHPUT_SOURCE}.",
                 "Parameters: docs/simulation.md, each row's SOURCE column; ESTIMATE=T marks estimates."])
    for name, (value, unit, _src, _est) in INSTRUMENT_PARAMETERS.items():
        hdr[name] = (value, unit)
    hdus = [fits.PrimaryHDU(header=hdr)]
    rows = list(INSTRUMENT_PARAMETERS.items())
    params = fits.BinTableHDU.from_columns([
        fits.Column("NAME", "16A", array=[r[0] for r in rows]),
        fits.Column("VALUE", "D", array=[r[1][0] for r in rows]),
        fits.Column("UNIT", "24A", array=[r[1][1] for r in rows]),
        fits.Column("SOURCE", "80A", array=[r[1][2] for r in rows]),
        fits.Column("ESTIMATE", "L", array=[r[1][3] for r in rows]),
    ], name="PARAMS")
    hdus.append(params)
    for band in ("GU", "GV", "GI"):
        with fits.open(Path(source_dir) / f"{band}.Throughput.1st.fits") as src:
            data = src[1].data
            tab = fits.BinTableHDU.from_columns([
                fits.Column("WAVELENGTH", "D", unit="Angstrom", array=np.asarray(data["WAVELENGTH"], float)),
                fits.Column("SENSITIVITY", "D", array=np.asarray(data["SENSITIVITY"], float)),
            ], name=f"THROUGHPUT_{band}")
            tab.header["SOURCE"] = THROUGHPUT_SOURCE[:68]
            hdus.append(tab)
    with fits.open(Path(source_dir) / "bkg_spec.fits") as src:
        data = src[1].data
        hdus.append(fits.BinTableHDU.from_columns([
            fits.Column("WAVELENGTH", "D", unit="Angstrom", array=np.asarray(data["wavelength"], float)),
            fits.Column("FLAM", "D", unit="erg/s/cm2/Angstrom/arcsec2", array=np.asarray(data["flam"], float)),
        ], name="ZODI"))
    return write_fits_atomic(fits.HDUList(hdus), out_path, overwrite=overwrite)


def load_instrument(path: Path) -> Instrument:
    with open_reference_file(path, "instrument") as hdul:
        params = {str(n).strip(): float(v) for n, v in zip(hdul["PARAMS"].data["NAME"], hdul["PARAMS"].data["VALUE"])}
        bands = {}
        for band in ("GV", "GI"):
            tp = hdul[f"THROUGHPUT_{band}"].data
            bands[band] = Band(
                name=band, wmin=params[f"{band}_WMIN"], wmax=params[f"{band}_WMAX"],
                dispersion=params[f"{band}_DISP"], resolution=params[f"{band}_R"],
                sky=params[f"{band}_SKY"],
                throughput_wave=np.array(tp["WAVELENGTH"], dtype=float),
                throughput=np.array(tp["SENSITIVITY"], dtype=float))
    missing = set(INSTRUMENT_PARAMETERS) - set(params)
    if missing:
        from ..reffiles.header import ReferenceFileError
        raise ReferenceFileError(f"instrument file {path} lacks parameters {sorted(missing)}")
    return Instrument(bands=bands, params=params, path=str(path))
