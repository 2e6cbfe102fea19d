"""Robustness: bad input, faults and interruption, with nothing lost (docs/robustness.md).

The promise under test: the stage never crashes with a traceback, never loses an object
silently, never modifies its input, never leaves a half-written output, and always says
in one sentence what was wrong. Cases already covered elsewhere are not repeated here
(tests/test_stage.py, tests/test_products.py); docs/robustness.md maps each guarantee to
the tests that back it.

One cached stage (``stage`` fixture, DUMMY reference set, 4 BNN samples) serves most
tests, so TensorFlow builds the network once; the CLI is called where its one-line stderr
and exit code are the point.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import fitsio
import numpy as np
import pytest
from astropy.io import fits

from conftest import sha256
from csst_sls_z import products
from csst_sls_z.products import writer as product_writer
from csst_sls_z.datamodel import BANDS_USED, EXT_REDSHIFT, StageStatus, ZWarn
from csst_sls_z.stage_cli import main as run_main

ROOT = Path(__file__).resolve().parent.parent
N_OBJ = 6                       # objects in the small products built here
VECTORS = ("WAVELENGTH", "FLUX", "ERR")
NODATA, MISSING, BAD = int(ZWarn.NODATA), int(ZWarn.MISSING_BAND), int(ZWarn.BAD_INPUT)
_LETTER = {"f8": "D", "f4": "E", "i2": "I", "i4": "J", "i8": "K", "u1": "B"}


# ---------------------------------------------------------------------------- builders
def _letter(arr) -> str:
    return _LETTER[np.asarray(arr).dtype.str[1:]]


def write_a(path, tables, extra_hdus=(), units=None, checksum=False):
    """A Layout A product from ``{band: {column: array}}`` (a list of 1-D arrays -> variable length).

    A band mapped to None is left out; columns are written in the dict's order, with the
    FITS type of each array's dtype. ``units``: {column: TUNIT} for every band table.
    """
    hdr = fits.Header()
    hdr["TELESCOP"], hdr["INSTRUME"] = "CSST", "MSC"
    hdus = [fits.PrimaryHDU(header=hdr)]
    hdus += [table_hdu(cols, f"SPEC_{band}", units) for band, cols in tables.items() if cols is not None]
    hdus.extend(extra_hdus)
    fits.HDUList(hdus).writeto(path, checksum=checksum)
    return Path(path)


def table_hdu(cols, extname, units=None):
    fcols = []
    for name, arr in cols.items():
        unit = (units or {}).get(name)
        if isinstance(arr, list):
            obj = np.empty(len(arr), dtype=object)
            for i, a in enumerate(arr):
                obj[i] = np.asarray(a)
            fcols.append(fits.Column(name=name, format=f"P{_letter(arr[0]) if arr else 'E'}()", array=obj,
                                     unit=unit))
        else:
            arr = np.asarray(arr)
            rep = "" if arr.ndim == 1 else str(arr.shape[1])
            fcols.append(fits.Column(name=name, format=f"{rep}{_letter(arr)}", array=arr, unit=unit))
    return fits.BinTableHDU.from_columns(fcols, name=extname)


def copy_tables(tables):
    return {b: None if t is None else {c: (list(v) if isinstance(v, list) else np.array(v)) for c, v in t.items()}
            for b, t in tables.items()}


def catalog(path):
    with fits.open(path) as hdul:
        return hdul[EXT_REDSHIFT].data.copy()


def no_temp_files(directory) -> bool:
    return not [p for p in Path(directory).iterdir() if p.name.startswith(".") and ".tmp" in p.name]


def one_line_naming(reason: str, path) -> bool:
    return "\n" not in reason and Path(path).name in reason and len(reason) < 400


def error_lines(stderr: str):
    return [line for line in stderr.splitlines() if line.startswith("csst-sls-z run: error:")]


def cli(args, refdir, capsys):
    code = run_main([str(a) for a in args] + ["--reference-dir", str(refdir), "--samples", "4"])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def base_tables(sim_product):
    """The first N_OBJ objects of the simulated product, as plain arrays (float32 spectra)."""
    with fits.open(sim_product) as hdul:
        return {b: {c: np.array(hdul[f"SPEC_{b}"].data[c][:N_OBJ]) for c in ("OBJID", "RA", "DEC") + VECTORS}
                for b in BANDS_USED}


@pytest.fixture(scope="module")
def stage(dummy_stage):
    return dummy_stage               # one network for the session (conftest), shared with test_fuzz


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("robust")


@pytest.fixture(scope="module")
def clean(base_tables, stage, workdir):
    """The clean small product and its catalogue: what equivalent inputs must reproduce."""
    path = write_a(workdir / "clean.fits", base_tables)
    out = workdir / "clean_out.fits"
    result = stage.run([path], out)
    assert result.exit_code == 0 and not result.failures, result.message
    return path, catalog(out)


def run_one(stage, path, out=None):
    """Run the cached stage on one input; checks the invariants every run must keep."""
    path = Path(path)
    out = Path(out) if out else path.with_name(path.stem + "_out.fits")
    before = sha256(path) if path.is_file() else None
    result = stage.run([path], out)
    if before is not None:
        assert sha256(path) == before                          # the input is never modified
    assert no_temp_files(out.parent)                           # never a half-written file
    for _, reason in result.failures:
        assert "\n" not in reason and "unexpected failure" not in reason
    if result.exit_code == 0:
        assert out.is_file()
    else:
        assert not out.exists()
    return result, (catalog(out) if out.is_file() else None)


def assert_refused(result, path, *words):
    assert result.exit_code == 1 and result.status is StageStatus.ERROR
    assert len(result.failures) == 1
    reason = result.failures[0][1]
    assert one_line_naming(reason, path), reason
    for word in words:
        assert word in reason, reason


# ============================================================================ input files
@pytest.mark.parametrize("kind", ["empty", "binary", "almost_fits", "directory", "missing"])
def test_not_a_fits_file_is_refused(kind, stage, tmp_path):
    path = tmp_path / f"input_{kind}.fits"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "binary":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif kind == "almost_fits":
        path.write_bytes(b"SIMPLE  =                    T" + b" " * 50 + b"garbage" * 400)
    elif kind == "directory":
        path.mkdir()
    result, _ = run_one(stage, path, tmp_path / "out.fits")
    assert_refused(result, path)


def _hdu_offsets(path):
    with fitsio.FITS(str(path)) as f:
        return [f[i].get_offsets() for i in range(len(f))]


@pytest.mark.parametrize("where", ["primary_header", "primary_end", "gv_header", "gv_data", "gi_data",
                                   "gi_padding"])
def test_truncated_file_is_refused(where, clean, stage, tmp_path):
    src, _ = clean
    raw = src.read_bytes()
    off = _hdu_offsets(src)
    cut = {"primary_header": 100, "primary_end": 2879,
           "gv_header": off[1]["header_start"] + 500, "gv_data": (off[1]["data_start"] + off[1]["data_end"]) // 2,
           "gi_data": off[2]["data_start"] + 1000, "gi_padding": len(raw) - 1}[where]
    path = tmp_path / "cut.fits"
    path.write_bytes(raw[:cut])
    result, _ = run_one(stage, path, tmp_path / "out.fits")
    assert_refused(result, path)
    if where.endswith(("data", "padding")):
        assert "truncated" in result.failures[0][1]


@pytest.mark.parametrize("layout", ["gu_only", "gv_image", "no_band_keyword"])
def test_no_spectra_tables_is_refused(layout, base_tables, stage, tmp_path):
    path = tmp_path / "nospec.fits"
    if layout == "gu_only":          # a GU table is read and ignored: nothing usable is left
        write_a(path, {}, extra_hdus=[table_hdu(base_tables["GV"], "SPEC_GU")])
    elif layout == "gv_image":
        write_a(path, {}, extra_hdus=[fits.ImageHDU(np.zeros((3, 4), np.float32), name="SPEC_GV")])
    else:                            # Layout B tables without BAND=GV/GI
        write_a(path, {}, extra_hdus=[fits.BinTableHDU.from_columns(
            [fits.Column(name=c, format="E", array=np.ones(5)) for c in VECTORS], name="SPECTRUM")])
    result, _ = run_one(stage, path, tmp_path / "out.fits")
    assert_refused(result, path)
    assert "SPEC_GV" in result.failures[0][1]


@pytest.mark.parametrize("change, words", [
    (("GV", "OBJID", None), ("OBJID",)),
    (("GV", "FLUX", "FLUXES"), ("FLUX",)),
    (("GI", "ERR", "ERROR"), ("ERR", "SPEC_GI")),
    (("GI", "WAVELENGTH", "LAMBDA"), ("WAVELENGTH", "SPEC_GI")),
], ids=["no-objid", "flux-misnamed", "err-misnamed-gi", "wave-misnamed-gi"])
def test_missing_or_misnamed_column_is_refused(change, words, base_tables, stage, tmp_path):
    band, col, new = change
    tables = copy_tables(base_tables)
    value = tables[band].pop(col)
    if new:
        tables[band][new] = value
    path = write_a(tmp_path / "cols.fits", tables)
    result, _ = run_one(stage, path, tmp_path / "out.fits")
    assert_refused(result, path, *words)


def test_column_names_are_case_insensitive(base_tables, clean, stage, tmp_path):
    tables = copy_tables(base_tables)
    tables["GV"] = {c.lower(): v for c, v in tables["GV"].items()}
    result, cat = run_one(stage, write_a(tmp_path / "lower.fits", tables))
    np.testing.assert_array_equal(cat["Z"], clean[1]["Z"])


@pytest.mark.parametrize("case", ["flux_int16", "err_int32", "objid_float", "objid_int16"])
def test_other_numeric_types_are_read(case, base_tables, stage, tmp_path):
    """Any FITS number type is read as a real number (integers too); the catalogue is complete."""
    tables = copy_tables(base_tables)
    gv = tables["GV"]
    if case == "flux_int16":
        gv["FLUX"] = np.round(gv["FLUX"] * 100).astype(np.int16)
    elif case == "err_int32":
        gv["ERR"] = np.maximum(np.round(gv["ERR"] * 100), 1).astype(np.int32)
    elif case == "objid_float":
        for t in tables.values():
            t["OBJID"] = t["OBJID"].astype(np.float64)
    else:
        for t in tables.values():
            t["OBJID"] = t["OBJID"].astype(np.int16)
    path = write_a(tmp_path / f"{case}.fits", tables)
    result, cat = run_one(stage, path)
    assert result.exit_code == 0 and len(cat) == N_OBJ
    np.testing.assert_array_equal(cat["OBJID"], base_tables["GV"]["OBJID"])     # small ids: exact in any type
    assert np.all(np.isfinite(cat["Z"]))


def test_non_integer_objid_is_refused(base_tables, stage, tmp_path):
    tables = copy_tables(base_tables)
    tables["GI"]["OBJID"] = tables["GI"]["OBJID"] + 0.5
    path = write_a(tmp_path / "half.fits", tables)
    result, _ = run_one(stage, path, tmp_path / "out.fits")
    assert_refused(result, path, "OBJID", "SPEC_GI")


@pytest.mark.parametrize("kind", ["fixed", "varlen"])
def test_wavelength_and_flux_of_different_lengths_are_refused(kind, base_tables, stage, tmp_path):
    tables = copy_tables(base_tables)
    gi = tables["GI"]
    if kind == "fixed":
        gi["FLUX"] = gi["FLUX"][:, :-7]
    else:
        for c in VECTORS:
            gi[c] = list(gi[c])
        gi["ERR"][3] = gi["ERR"][3][:-1]
    path = write_a(tmp_path / "lengths.fits", tables)
    result, _ = run_one(stage, path, tmp_path / "out.fits")
    assert_refused(result, path, "different lengths", "SPEC_GI")


# Transformations that leave the measurement unchanged: same objects, same Z.
def _scaled(factor, dtype=np.float32):
    def apply(tables, path):
        for t in tables.values():
            t["FLUX"] = (t["FLUX"].astype(np.float64) * factor).astype(dtype)
            t["ERR"] = (t["ERR"].astype(np.float64) * factor).astype(dtype)
        return write_a(path, tables)
    return apply


def _reversed_wavelengths(tables, path):
    for t in tables.values():
        for c in VECTORS:
            t[c] = t[c][:, ::-1].copy()
    return write_a(path, tables)


def _variable_length(tables, path):
    for t in tables.values():
        for c in VECTORS:
            t[c] = list(t[c])
    return write_a(path, tables)


def _little_endian_doubles_via_fitsio(tables, path):
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(None, header={"TELESCOP": "CSST"})
        for band, t in tables.items():
            npix = t["FLUX"].shape[1]
            arr = np.zeros(len(t["OBJID"]), dtype=[("OBJID", "<i8"), ("RA", "<f8"), ("DEC", "<f8")]
                           + [(c, "<f8", (npix,)) for c in VECTORS])
            for name in arr.dtype.names:
                arr[name] = t[name]
            f.write(arr, extname=f"SPEC_{band}")
    return path


EQUIVALENT = {"flux_1e-30": _scaled(1e-30), "flux_1e+30": _scaled(1e30),
              "float64_1e-200": _scaled(1e-200, np.float64), "float64_1e+200": _scaled(1e200, np.float64),
              "reversed_wavelengths": _reversed_wavelengths, "variable_length": _variable_length,
              "little_endian_f8_fitsio": _little_endian_doubles_via_fitsio}


@pytest.mark.parametrize("name", list(EQUIVALENT))
def test_equivalent_inputs_give_the_same_redshifts(name, base_tables, clean, stage, tmp_path):
    """Absurd flux scales, unsorted pixels, variable-length arrays, other dtypes / byte orders:
    the network input is normalised by the median error, so Z is that of the clean product."""
    path = EQUIVALENT[name](copy_tables(base_tables), tmp_path / f"{name}.fits")
    result, cat = run_one(stage, path)
    ref = clean[1]
    assert result.exit_code == 0
    np.testing.assert_array_equal(cat["OBJID"], ref["OBJID"])
    assert np.all(np.isfinite(cat["Z"]))
    np.testing.assert_allclose(cat["Z"], ref["Z"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(cat["ZERR"], ref["ZERR"], rtol=1e-3, atol=1e-6)
    np.testing.assert_array_equal(cat["NPIX_GV"], ref["NPIX_GV"])
    np.testing.assert_allclose(cat["SNR_GI"], ref["SNR_GI"], rtol=1e-4)
    expected = ref["ZWARN"] | (BAD if name == "reversed_wavelengths" else 0)
    np.testing.assert_array_equal(cat["ZWARN"], expected)


def test_variable_length_rows_of_different_lengths_work(base_tables, stage, tmp_path):
    tables = copy_tables(base_tables)
    for t in tables.values():
        keep = [t["FLUX"].shape[1] - 37 * k for k in range(N_OBJ)]
        for c in VECTORS:
            t[c] = [row[:m] for row, m in zip(t[c], keep)]
    tables["GI"]["WAVELENGTH"] = [w.astype(np.float64) for w in tables["GI"]["WAVELENGTH"]]   # 1PD next to 1PE
    result, cat = run_one(stage, write_a(tmp_path / "ragged.fits", tables))
    assert result.exit_code == 0 and len(cat) == N_OBJ
    np.testing.assert_array_equal(cat["OBJID"], base_tables["GV"]["OBJID"])
    assert list(cat["NPIX_GV"]) == [base_tables["GV"]["FLUX"].shape[1] - 37 * k for k in range(N_OBJ)]
    assert np.all(np.isfinite(cat["Z"]))


@pytest.mark.parametrize("writer", ["fitsio_fixed", "astropy_varlen"])
def test_zero_rows_is_nothing_to_do(writer, base_tables, dummy_refset, tmp_path, capsys):
    path = tmp_path / "empty.fits"
    if writer == "astropy_varlen":
        write_a(path, {b: {"OBJID": t["OBJID"][:0], **{c: [] for c in VECTORS}} for b, t in base_tables.items()})
    else:
        with fitsio.FITS(str(path), "rw") as f:
            for band in BANDS_USED:
                f.write(np.zeros(0, dtype=[("OBJID", "i8")] + [(c, "f4", (50,)) for c in VECTORS]),
                        extname=f"SPEC_{band}")
    before = sha256(path)
    code, out = cli([path, "-o", tmp_path / "o.fits"], dummy_refset, capsys)
    assert code == 3
    assert "status NO_DATA: 0 objects" in out.out
    assert not error_lines(out.err)
    assert not (tmp_path / "o.fits").exists() and no_temp_files(tmp_path)
    assert sha256(path) == before


def test_duplicate_objids_one_row_flagged_bad_input(base_tables, clean, stage, tmp_path):
    """Rule: an OBJID repeated within one band table is one object; its first row is used and
    the object gets BAD_INPUT. The repeated row is accounted for, never a row of its own."""
    tables = copy_tables(base_tables)
    ids = base_tables["GV"]["OBJID"]
    tables["GV"]["OBJID"][3] = ids[2]              # GV: rows 2 and 3 now both say ids[2]
    tables["GI"]["OBJID"][5] = ids[4]              # GI: rows 4 and 5 both say ids[4]
    result, cat = run_one(stage, write_a(tmp_path / "dup.fits", tables))
    assert result.exit_code == 0 and result.status is StageStatus.WARNING
    # Union of ids in order of first appearance: GV's (ids[3] is gone from GV), then GI-only ids[3].
    assert list(cat["OBJID"]) == [ids[0], ids[1], ids[2], ids[4], ids[5], ids[3]]
    row = {int(o): i for i, o in enumerate(cat["OBJID"])}
    z = cat["ZWARN"]
    for dup in (ids[2], ids[4]):
        assert z[row[dup]] & BAD
    assert z[row[ids[3]]] & MISSING and cat["NPIX_GV"][row[ids[3]]] == 0      # its GV row said ids[2]
    assert z[row[ids[5]]] & MISSING and cat["NPIX_GI"][row[ids[5]]] == 0
    assert not z[row[ids[0]]] & BAD and not z[row[ids[1]]] & BAD
    # The first occurrence is the one measured: same pixel counts and SNR as in the clean product.
    assert cat["NPIX_GV"][row[ids[2]]] == clean[1]["NPIX_GV"][2]
    assert cat["SNR_GV"][row[ids[2]]] == clean[1]["SNR_GV"][2]
    assert cat["SNR_GI"][row[ids[4]]] == clean[1]["SNR_GI"][4]


def test_objids_in_one_band_only(base_tables, stage, tmp_path):
    """GV holds ids 0-3, GI ids 2-5 and two new ones: one row each for the union, MISSING_BAND where half."""
    tables = copy_tables(base_tables)
    ids = base_tables["GV"]["OBJID"]
    for c, v in tables["GV"].items():
        tables["GV"][c] = v[:4]
    gi = tables["GI"]
    gi["OBJID"] = np.concatenate([ids[2:], [10 ** 12, 10 ** 12 + 1]])
    for c in gi:
        if c != "OBJID":
            gi[c] = np.concatenate([gi[c][2:], gi[c][:2]])
    result, cat = run_one(stage, write_a(tmp_path / "oneband.fits", tables))
    assert list(cat["OBJID"]) == list(ids[:4]) + list(ids[4:]) + [10 ** 12, 10 ** 12 + 1]
    only_gv = np.isin(cat["OBJID"], ids[:2])
    only_gi = ~np.isin(cat["OBJID"], ids[:4])
    assert np.all(cat["ZWARN"][only_gv | only_gi] & MISSING)
    assert np.all(cat["NPIX_GI"][only_gv] == 0) and np.all(cat["NPIX_GV"][only_gi] == 0)
    assert not np.any(cat["ZWARN"][~(only_gv | only_gi)] & MISSING)
    assert np.all(np.isfinite(cat["Z"]))                       # one band is enough to measure
    np.testing.assert_allclose(cat["RA"][only_gi][:2], base_tables["GI"]["RA"][4:])


# ============================================================================ pixel values
PIXEL_CASES = {
    # name: (edit function on (gv, gi, k), expectations)
    "nan_inf_flux": "GV FLUX has 10 NaN and 5 inf pixels",
    "nan_inf_err": "GI ERR has 10 NaN and 5 inf pixels",
    "err_zero_negative": "GV ERR is 0 on 10 pixels, GI ERR is negative on 12 (ordinary bad-pixel marks)",
    "all_masked": "every pixel of both bands masked (GV ERR -1, GI FLUX NaN)",
    "wave_duplicated": "GV wavelengths 100-109 all equal",
    "wave_outside": "both bands' wavelengths shifted far outside the grid",
}


@pytest.fixture(scope="module")
def degraded(base_tables, stage, workdir):
    """One product with a different pixel-level fault in each object, measured once."""
    tables = copy_tables(base_tables)
    gv, gi = tables["GV"], tables["GI"]
    k = {name: i for i, name in enumerate(PIXEL_CASES)}
    gv["FLUX"][k["nan_inf_flux"], 20:30] = np.nan
    gv["FLUX"][k["nan_inf_flux"], 40:45] = np.inf
    gi["ERR"][k["nan_inf_err"], 20:30] = np.nan
    gi["ERR"][k["nan_inf_err"], 40:45] = -np.inf
    gv["ERR"][k["err_zero_negative"], 50:60] = 0.0
    gi["ERR"][k["err_zero_negative"], 50:62] = -gi["ERR"][k["err_zero_negative"], 50:62]
    gv["ERR"][k["all_masked"], :] = -1.0
    gi["FLUX"][k["all_masked"], :] = np.nan
    gv["WAVELENGTH"][k["wave_duplicated"], 100:110] = gv["WAVELENGTH"][k["wave_duplicated"], 100]
    gv["WAVELENGTH"][k["wave_outside"]] += 1e5
    gi["WAVELENGTH"][k["wave_outside"]] -= 1e5
    path = write_a(workdir / "degraded.fits", tables)
    result, cat = run_one(stage, path)
    assert result.exit_code == 0 and result.status is StageStatus.WARNING
    assert list(cat["OBJID"]) == list(base_tables["GV"]["OBJID"])      # nothing lost
    full = {b: base_tables[b]["FLUX"].shape[1] for b in BANDS_USED}
    return {name: cat[i] for name, i in k.items()}, full, result


def test_nan_and_inf_flux_masked_and_flagged(degraded):
    rows, full, _ = degraded
    r = rows["nan_inf_flux"]
    assert r["ZWARN"] & BAD and not r["ZWARN"] & (NODATA | MISSING)
    assert r["NPIX_GV"] == full["GV"] - 15 and r["NPIX_GI"] == full["GI"]
    assert np.isfinite(r["Z"]) and np.isfinite(r["ZERR"]) and np.isfinite(r["SNR_GV"])


def test_nan_and_inf_err_masked_and_flagged(degraded):
    rows, full, _ = degraded
    r = rows["nan_inf_err"]
    assert r["ZWARN"] & BAD
    assert r["NPIX_GI"] == full["GI"] - 15 and np.isfinite(r["Z"]) and np.isfinite(r["SNR_GI"])


def test_zero_or_negative_err_is_an_ordinary_mask(degraded):
    rows, full, _ = degraded
    r = rows["err_zero_negative"]
    assert not r["ZWARN"] & BAD                                 # the documented bad-pixel mark
    assert r["NPIX_GV"] == full["GV"] - 10 and r["NPIX_GI"] == full["GI"] - 12
    assert np.isfinite(r["Z"])


def test_all_pixels_masked_is_nodata_with_nan_z(degraded):
    rows, _, result = degraded
    r = rows["all_masked"]
    assert r["ZWARN"] & NODATA and r["ZWARN"] & MISSING
    assert r["NPIX_GV"] == 0 and r["NPIX_GI"] == 0
    for col in ("Z", "ZERR", "Z_LO", "Z_HI", "Z_CNN", "ZERR_RAW"):
        assert np.isnan(r[col]), col
    assert result.summary["zwarn_counts"]["NODATA"] == 2       # this one and wave_outside


def test_duplicated_wavelengths_keep_the_first(degraded):
    rows, full, _ = degraded
    r = rows["wave_duplicated"]
    assert r["ZWARN"] & BAD and r["NPIX_GV"] == full["GV"] - 9 and np.isfinite(r["Z"])


def test_wavelengths_outside_the_band_are_nodata(degraded):
    rows, _, _ = degraded
    r = rows["wave_outside"]
    assert r["ZWARN"] & NODATA and np.isnan(r["Z"]) and r["NPIX_GV"] == 0 and r["NPIX_GI"] == 0
    assert not r["ZWARN"] & BAD                                 # finite, sorted: valid data, just not ours


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")   # SNR_GV = inf, as it is
def test_absurd_values_never_reach_the_network_as_nan(base_tables, stage, tmp_path):
    """Finite but absurd numbers (float64 1e300 flux on 1e-300 errors, 1e300 wavelengths): the
    object is measured from what is usable or flagged, never a NaN redshift with ZWARN 0."""
    tables = copy_tables(base_tables)
    for t in tables.values():
        for c in VECTORS:
            t[c] = t[c].astype(np.float64)
    gv, gi = tables["GV"], tables["GI"]
    gv["FLUX"][0, 10:20] = 1e300                 # overflows the float32 network input
    gv["ERR"][1, :] = 1e-300                     # underflows 1 / ERR^2
    gi["ERR"][1, :] = 1e-300
    gv["WAVELENGTH"][2, -1] = 1.7e308            # pixel edges at the edge of float64
    gi["FLUX"][3, :] = -1e300
    result, cat = run_one(stage, write_a(tmp_path / "absurd.fits", tables))
    assert result.exit_code == 0 and len(cat) == N_OBJ
    unmeasured = ~np.isfinite(cat["Z"])
    assert np.all(cat["ZWARN"][unmeasured] != 0)
    assert cat["ZWARN"][0] & BAD
    assert np.all(np.isfinite(cat["Z"][:3]))


# ============================================================================ reference files
@pytest.fixture(scope="module")
def wrong_shape_set(dummy_refset, tmp_path_factory):
    """A DUMMY set whose backbone file holds weights of another width, with a correct sha256."""
    import json as _json
    from csst_sls_z.network.backbone import build_backbone
    from csst_sls_z.network.weights import read_config, save_weights
    from csst_sls_z.reffiles.sets import write_manifest
    out = tmp_path_factory.mktemp("wrongshape") / "set"
    shutil.copytree(dummy_refset, out)
    cfg = read_config(out / "backbone.fits", "backbone")
    wider = replace(cfg, widths=cfg.widths[:-1] + (cfg.widths[-1] * 2,))
    (out / "backbone.fits").unlink()
    save_weights(build_backbone(wider), out / "backbone.fits", "backbone", cfg, "DUMMY",
                 "backbone of the wrong width (test)")              # CONFIG says cfg, arrays are wider
    manifest = _json.loads((out / "manifest.json").read_text())
    write_manifest(out, {e["reftype"]: e["name"] for e in manifest["files"]}, "DUMMY")
    return out


def _break_refset(kind, dummy_refset, wrong_shape_set, tmp_path):
    if kind == "wrong_shape":
        return wrong_shape_set, ("backbone.fits", "shape")
    refs = tmp_path / "refs"
    shutil.copytree(dummy_refset, refs)
    if kind == "missing_file":
        (refs / "thresholds.fits").unlink()
        return refs, ("thresholds", "missing")
    if kind == "sha256_mismatch":
        with fits.open(refs / "wavegrid.fits", mode="update") as hdul:   # a valid FITS, other content
            hdul[0].header["DESCRIP"] = "edited after the manifest was written"
        return refs, ("wavegrid", "sha256")
    manifest = json.loads((refs / "manifest.json").read_text())
    manifest["schema_version"] += 1
    (refs / "manifest.json").write_text(json.dumps(manifest))
    return refs, ("schema version", "newer")


@pytest.mark.parametrize("kind", ["missing_file", "sha256_mismatch", "newer_manifest_schema", "wrong_shape"])
def test_bad_reference_set_refused_before_any_spectrum(kind, dummy_refset, wrong_shape_set, product_copy,
                                                      tmp_path, capsys, monkeypatch):
    refs, words = _break_refset(kind, dummy_refset, wrong_shape_set, tmp_path)
    reads = []

    def forbidden(*a, **k):
        reads.append(a)
        raise AssertionError("a spectrum was read before the reference set was validated")
    # Opening an input (its header and OBJIDs, the command's quick checks) is allowed; its spectra are not.
    monkeypatch.setattr(products.ProductReader, "iter_chunks", forbidden)
    monkeypatch.setattr(products.ProductReader, "read_band", forbidden)
    out = tmp_path / "out.fits"
    code, res = cli([product_copy, "-o", out], refs, capsys)
    assert code == 1 and not reads
    lines = error_lines(res.err)
    assert len(lines) == 1 and lines[0].startswith("csst-sls-z run: error:")
    assert "unexpected" not in lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert not out.exists() and no_temp_files(tmp_path)


# ============================================================================ outputs
def test_output_directory_missing(product_copy, dummy_refset, tmp_path, capsys):
    second = tmp_path / "second.fits"
    shutil.copy(product_copy, second)
    for args in ([product_copy, "-o", tmp_path / "nowhere" / "out.fits"],      # one input, a file
                 [product_copy, second, "-o", tmp_path / "nowhere"]):         # several, a directory
        code, res = cli(args, dummy_refset, capsys)
        lines = error_lines(res.err)
        assert code == 1 and len(lines) == 1 and "nowhere" in lines[0] and "does not exist" in lines[0]
    assert not (tmp_path / "nowhere").exists()


def test_output_directory_read_only(product_copy, stage, tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    before = sha256(product_copy)
    os.chmod(ro, 0o555)
    try:
        if os.access(ro, os.W_OK):          # root ignores the mode: deny creation the way the OS would
            real_open = os.open

            def deny(path, flags, *args, **kw):
                if Path(path).parent == ro and flags & os.O_CREAT:
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
                return real_open(path, flags, *args, **kw)
            monkeypatch.setattr(os, "open", deny)
        result = stage.run([product_copy], ro / "out.fits")
        monkeypatch.undo()
    finally:
        os.chmod(ro, 0o755)
    assert_refused(result, ro, "cannot create a file")
    assert "denied" in result.failures[0][1].lower()
    assert list(ro.iterdir()) == [] and sha256(product_copy) == before


def test_existing_output_refused_unless_overwrite(product_copy, dummy_refset, tmp_path, capsys):
    outdir = tmp_path / "outdir"
    outdir.mkdir()
    other = tmp_path / "other.fits"
    shutil.copy(product_copy, other)
    (outdir / "input_slsz.fits").write_text("precious")
    code, res = cli([product_copy, other, "-o", outdir], dummy_refset, capsys)
    lines = error_lines(res.err)
    assert code == 1 and len(lines) == 1 and "exists" in lines[0] and "input_slsz.fits" in lines[0]
    assert (outdir / "input_slsz.fits").read_text() == "precious"      # untouched
    assert (outdir / "other_slsz.fits").is_file()                      # the other input still processed
    code, res = cli([product_copy, other, "-o", outdir, "--overwrite"], dummy_refset, capsys)
    assert code == 0 and not error_lines(res.err)
    with fits.open(outdir / "input_slsz.fits", checksum=True) as hdul:
        assert all(h.verify_checksum() == 1 for h in hdul)
    assert no_temp_files(outdir)


@pytest.mark.parametrize("overwrite", [False, True], ids=["new", "replacing"])
def test_disk_full_mid_write_leaves_nothing(overwrite, product_copy, dummy_refset, tmp_path, capsys,
                                            monkeypatch):
    real_write = product_writer._write_hdulist

    def disk_fills(hdul, tmp):
        real_write(hdul, tmp)                              # write the whole file, then keep only part
        with open(tmp, "r+b") as fh:
            fh.truncate(os.path.getsize(tmp) // 3)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(product_writer, "_write_hdulist", disk_fills)
    out = tmp_path / "out.fits"
    if overwrite:
        out.write_bytes(b"previous output")
    before = sha256(product_copy)
    code, res = cli([product_copy, "-o", out] + (["--overwrite"] if overwrite else []), dummy_refset, capsys)
    lines = error_lines(res.err)
    assert code == 1 and len(lines) == 1
    assert "No space left on device" in lines[0] and "out.fits" in lines[0]
    assert out.read_bytes() == b"previous output" if overwrite else not out.exists()
    assert no_temp_files(tmp_path) and sha256(product_copy) == before


# -- interruption: a real process, killed while it writes
@pytest.fixture(scope="module")
def slow_to_write(sim_product, tmp_path_factory):
    """The simulated product plus a 64 MB extension the writer must copy: writing takes a while."""
    path = tmp_path_factory.mktemp("big") / "big.fits"
    with fits.open(sim_product) as hdul:
        hdus = [h.copy() for h in hdul] + [fits.ImageHDU(np.zeros(8_000_000), name="PADDING")]
        fits.HDUList(hdus).writeto(path, checksum=True)     # the copied CHECKSUM cards are redone
    return path


def _start_and_catch_writing(inp, out, refdir):
    """Start ``python -m csst_sls_z.stage_cli`` and return (process, temp path) once it is writing."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "csst_sls_z.stage_cli", str(inp), "-o", str(out),
                             "--reference-dir", str(refdir), "--samples", "4", "--log-level", "WARNING"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pattern = f".{out.name}.*.tmp"
    seen_at = None
    deadline = time.time() + 240
    while time.time() < deadline:
        temps = list(out.parent.glob(pattern))
        if temps:
            seen_at = seen_at or time.time()
            if temps[0].stat().st_size > 0 or time.time() - seen_at > 2:
                return proc, temps[0]
        elif proc.poll() is not None:
            break
        time.sleep(0.001)
    proc.kill()
    _, err = proc.communicate()
    pytest.fail(f"the stage was never caught writing (exit {proc.returncode}): {err[-1000:]}")


@pytest.mark.slow
def test_killed_mid_write_leaves_no_output(slow_to_write, dummy_refset, tmp_path, capsys):
    before = sha256(slow_to_write)
    out = tmp_path / "out.fits"
    proc, tmp = _start_and_catch_writing(slow_to_write, out, dummy_refset)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()                                    # never a partial file under the output's name
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert all(name.startswith(".out.fits.") and name.endswith(".tmp") for name in leftovers), leftovers
    assert sha256(slow_to_write) == before
    # Cleaning up is deleting .NAME.*.tmp; a rerun is not disturbed by the leftover either way.
    code, _ = cli([slow_to_write, "-o", out, "--catalog-only"], dummy_refset, capsys)
    assert code in (0,) and out.is_file()
    for name in leftovers:
        (tmp_path / name).unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fits"]


@pytest.mark.slow
def test_sigterm_mid_write_cleans_up(slow_to_write, dummy_refset, tmp_path):
    before = sha256(slow_to_write)
    out = tmp_path / "out.fits"
    proc, tmp = _start_and_catch_writing(slow_to_write, out, dummy_refset)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:                 # the write won the race: then the output is complete
        with fits.open(out, checksum=True) as hdul:
            assert all(h.verify_checksum() == 1 for h in hdul)
        pytest.skip("the stage finished writing before SIGTERM arrived")
    assert proc.returncode == 1
    assert "Traceback" not in err
    lines = error_lines(err)
    assert len(lines) == 1 and "interrupted" in lines[0]
    assert list(tmp_path.iterdir()) == []                      # temp removed, no output
    assert sha256(slow_to_write) == before


# ============================================================================ batch
def _corrupt_card(src, dst):
    """A copy whose SPEC_GI header has a card cfitsio reads and astropy cannot re-write."""
    with fits.open(src) as hdul:
        hdul.writeto(dst, checksum=True)
    raw = bytearray(Path(dst).read_bytes())
    off = _hdu_offsets(dst)[2]["header_start"]
    pos = raw.index(b"DATASUM =", off)
    raw[pos + 8] = ord("Z")
    Path(dst).write_bytes(bytes(raw))
    return dst


@pytest.mark.filterwarnings("ignore:The following header keyword is invalid")
def test_batch_one_bad_each_way_others_processed(clean, sim_product, dummy_refset, tmp_path, capsys):
    good = tmp_path / "good.fits"
    shutil.copy(sim_product, good)
    small = tmp_path / "small.fits"
    shutil.copy(clean[0], small)
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(good.read_bytes()[:20000])
    missing = tmp_path / "missing.fits"
    uncopyable = _corrupt_card(clean[0], tmp_path / "uncopyable.fits")
    empty = tmp_path / "empty.fits"
    with fits.open(good) as hdul:
        fits.HDUList([hdul[0].copy()] + [fits.BinTableHDU(hdul[n].data[:0], header=hdul[n].header, name=n)
                                         for n in ("SPEC_GV", "SPEC_GI")]).writeto(empty)
    inputs = [good, truncated, missing, small, uncopyable, empty]
    stamps = {p: sha256(p) for p in inputs if p.exists()}
    outdir = tmp_path / "out"
    outdir.mkdir()
    summary = tmp_path / "summary.json"
    # --ignore-checksum: the damaged card also breaks the HDU's checksum (refused by default,
    # R::test_checksum_failure_refused_unless_ignored); here the copy itself must fail cleanly.
    code, res = cli(inputs + ["-o", outdir, "--summary-json", summary, "--ignore-checksum"], dummy_refset, capsys)
    assert code == 1
    data = json.loads(summary.read_text())
    assert data["status"] == "WARNING"
    assert sorted(Path(p).name for p in data["outputs"]) == ["good_slsz.fits", "small_slsz.fits"]
    failed = {Path(f).name: reason for f, reason in data["failures"]}
    assert sorted(failed) == ["missing.fits", "truncated.fits", "uncopyable.fits"]
    assert "truncated" in failed["truncated.fits"] and "does not exist" in failed["missing.fits"]
    assert "copied into the output" in failed["uncopyable.fits"]
    for name, reason in failed.items():
        assert one_line_naming(reason, name) and "unexpected" not in reason
    lines = error_lines(res.err)
    assert len(lines) == 3 and all(any(n in line for line in lines) for n in failed)
    assert data["summary"]["files"][str(empty)]["n_objects"] == 0      # accounted for, nothing to write
    assert data["summary"]["n_objects"] == 40 + N_OBJ
    assert sorted(p.name for p in outdir.iterdir()) == ["good_slsz.fits", "small_slsz.fits"]
    assert all(sha256(p) == s for p, s in stamps.items())


# ============================================================================ real-world inputs (issue 16)
# Each case: exit 0 with every object present and right, or exit 1 with one sentence, no
# traceback, nothing written and the input unchanged; never exit 0 with wrong numbers.
def _same_catalogue(cat, ref, zwarn=True):
    np.testing.assert_array_equal(cat["OBJID"], ref["OBJID"])
    np.testing.assert_allclose(cat["Z"], ref["Z"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(cat["ZERR"], ref["ZERR"], rtol=1e-3, atol=1e-6)
    np.testing.assert_array_equal(cat["NPIX_GV"], ref["NPIX_GV"])
    np.testing.assert_array_equal(cat["NPIX_GI"], ref["NPIX_GI"])
    np.testing.assert_allclose(cat["SNR_GI"], ref["SNR_GI"], rtol=1e-4)
    if zwarn:
        np.testing.assert_array_equal(cat["ZWARN"], ref["ZWARN"])


def _header(path, key, ext=EXT_REDSHIFT):
    with fits.open(path) as hdul:
        return hdul[ext].header.get(key), hdul[0].header.get(key)


def _refused_by_cli(args, refdir, capsys, inputs, out, *words):
    """Exit 1, one line naming ``words``, no output, inputs unchanged."""
    stamps = {p: sha256(p) for p in inputs}
    code, res = cli(args, refdir, capsys)
    lines = error_lines(res.err)
    assert code == 1 and len(lines) == 1, res.err
    assert "unexpected" not in lines[0]
    for word in words:
        assert str(word) in lines[0], lines[0]
    assert not Path(out).exists()
    assert all(sha256(p) == s for p, s in stamps.items())
    return lines[0]


# -- 1. units: TUNIT of WAVELENGTH, FLUX and ERR honoured through astropy.units
# name: {column: (TUNIT, factor the values are multiplied by)}
UNIT_CASES = {
    "wave_nm": {"WAVELENGTH": ("nm", 0.1)},
    "wave_um": {"WAVELENGTH": ("um", 1e-4)},
    "flux_and_err_cgs": {"FLUX": ("erg/s/cm2/Angstrom", 1e-17), "ERR": ("erg/s/cm2/Angstrom", 1e-17)},
    "flux_cgs_err_scaled": {"FLUX": ("erg/s/cm2/Angstrom", 1e-17), "ERR": ("1e-17 erg/s/cm2/Angstrom", 1.0)},
    "flux_si_w_m2_nm": {"FLUX": ("W/m2/nm", 1e-19), "ERR": ("W m-2 nm-1", 1e-19)},
    "all_declared_internal": {"WAVELENGTH": ("Angstrom", 1.0), "FLUX": ("1e-17 erg/s/cm2/Angstrom", 1.0),
                              "ERR": ("1e-17 erg/s/cm2/Angstrom", 1.0)},
}


@pytest.mark.parametrize("name", list(UNIT_CASES))
def test_units_are_honoured(name, base_tables, clean, stage, tmp_path):
    """Issue 16 case 1: wavelengths in nm or um, fluxes in erg/s/cm2/Angstrom or W/m2/nm give the
    clean product's redshifts (values converted to the internal units before preprocessing)."""
    tables = copy_tables(base_tables)
    units = {}
    for col, (unit, factor) in UNIT_CASES[name].items():
        units[col] = unit
        for t in tables.values():
            t[col] = t[col].astype(np.float64) * factor
    path = write_a(tmp_path / f"{name}.fits", tables, units=units)
    result, cat = run_one(stage, path)
    assert result.exit_code == 0
    _same_catalogue(cat, clean[1])
    assumed = len(units) < 3                             # a column without TUNIT: documented units
    assert _header(path.with_name(path.stem + "_out.fits"), "UNITDFLT") == (assumed, assumed)


BAD_UNITS = {
    "unparseable": ({"FLUX": "furlongs per fortnight", "ERR": "furlongs per fortnight"},
                    ("FLUX", "'furlongs per fortnight'", "cannot parse")),
    "wavelength_in_hz": ({"WAVELENGTH": "Hz"}, ("WAVELENGTH", "'Hz'", "cannot be converted to Angstrom")),
    "err_f_nu": ({"FLUX": "1e-17 erg/s/cm2/Angstrom", "ERR": "erg/s/cm2/Hz"},
                 ("ERR", "'erg/s/cm2/Hz'", "cannot be converted")),
    "flux_with_unit_err_without": ({"FLUX": "erg/s/cm2/Angstrom"}, ("FLUX", "ERR", "no unit")),
}


@pytest.mark.parametrize("name", list(BAD_UNITS))
def test_unparseable_or_inconvertible_unit_is_refused(name, base_tables, dummy_refset, tmp_path, capsys):
    """Issue 16 case 1: a unit astropy cannot parse, or that cannot be converted (flux and error of
    different dimensions), is one sentence naming the file, the column and the unit."""
    units, words = BAD_UNITS[name]
    path = write_a(tmp_path / "units.fits", copy_tables(base_tables), units=units)
    out = tmp_path / "out.fits"
    _refused_by_cli([path, "-o", out], dummy_refset, capsys, [path], out, "units.fits", "SPEC_GV", *words)
    assert no_temp_files(tmp_path)


def test_missing_tunit_is_assumed_warned_and_flagged(clean, stage, tmp_path, caplog):
    """Issue 16 case 1: without TUNIT the documented units are assumed, with a log warning and
    UNITDFLT = T in the output headers (a product with TUNITs says F)."""
    import logging
    path = tmp_path / "no_units.fits"
    shutil.copy(clean[0], path)             # a file of its own: each file's warnings are logged once
    with caplog.at_level(logging.WARNING, logger="csst_sls_z.products"):
        result, cat = run_one(stage, path, tmp_path / "assumed.fits")
    assert result.exit_code == 0 and len(cat) == N_OBJ
    assert any("no TUNIT for WAVELENGTH, FLUX, ERR" in r.getMessage() for r in caplog.records)
    assert _header(tmp_path / "assumed.fits", "UNITDFLT") == (True, True)


# -- 2. scaled integer columns (TSCALn / TZEROn / TNULLn)
@pytest.mark.parametrize("width, layout", [("int16", "fixed"), ("int32", "fixed"), ("int16", "varlen")])
def test_scaled_integer_columns_are_applied(width, layout, base_tables, stage, tmp_path):
    """Issue 16 case 2: FLUX and ERR stored as 16- or 32-bit integers with TSCAL/TZERO (and TNULL on
    one pixel) give exactly the redshifts of the same physical values stored as float64."""
    dtype = np.dtype(width)
    top = np.iinfo(dtype).max
    tnull = int(np.iinfo(dtype).min)
    scaled, physical = copy_tables(base_tables), copy_tables(base_tables)
    tzero = 0.5
    tscal = {col: max(float(np.abs(base_tables[b][col].astype(np.float64) - tzero).max()) for b in BANDS_USED)
             / (top - 1) for col in ("FLUX", "ERR")}
    for band in BANDS_USED:
        for col in ("FLUX", "ERR"):
            x = base_tables[band][col].astype(np.float64)
            raw = np.round((x - tzero) / tscal[col]).astype(dtype)
            if band == "GV" and col == "FLUX":
                raw[1, 7] = tnull                        # a missing pixel
            value = raw.astype(np.float64) * tscal[col] + tzero
            value[raw == tnull] = np.nan
            scaled[band][col], physical[band][col] = raw, value
    if layout == "varlen":
        for tables in (scaled, physical):
            for t in tables.values():
                for c in VECTORS:
                    t[c] = list(t[c])
    ref_path = write_a(tmp_path / "physical.fits", physical)
    path = write_a(tmp_path / "scaled.fits", scaled)
    with fitsio.FITS(str(path), "rw") as f:                  # same TSCAL for both bands, per column
        for ext in ("SPEC_GV", "SPEC_GI"):
            names = [c.upper() for c in f[ext].get_colnames()]
            for col in ("FLUX", "ERR"):
                n = names.index(col) + 1
                f[ext].write_key(f"TSCAL{n}", tscal[col])
                f[ext].write_key(f"TZERO{n}", tzero)
                f[ext].write_key(f"TNULL{n}", tnull)
    if layout == "fixed":            # astropy agrees on what the file holds (it ignores TSCAL on P columns)
        with fits.open(path) as hdul:
            got = np.asarray(hdul["SPEC_GV"].data["FLUX"][0], dtype=np.float64)
            np.testing.assert_allclose(got, physical["GV"]["FLUX"][0], rtol=1e-12)
    _, ref = run_one(stage, ref_path)
    result, cat = run_one(stage, path)
    assert result.exit_code == 0
    _same_catalogue(cat, ref)
    assert cat["NPIX_GV"][1] == ref["NPIX_GV"][1] and cat["ZWARN"][1] & BAD      # the TNULL pixel: masked
    # The same file compressed: the scaling cannot be read from it, so it is refused in one sentence.
    import gzip
    gz = tmp_path / "scaled.fits.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    result, _ = run_one(stage, gz, tmp_path / "gz_out.fits")
    assert_refused(result, gz, "decompress")


# -- 3. directory mode: one output per input, named by the whole stem
def test_directory_mode_names_are_unique_and_collisions_refused(base_tables, dummy_refset, tmp_path, capsys,
                                                                monkeypatch):
    """Issue 16 case 3: `run sky.north.fits sky.south.fits -o DIR` writes sky.north_slsz.fits and
    sky.south_slsz.fits, each with its own objects; two inputs that would share an output name are
    refused in one sentence before any spectrum is read."""
    north = copy_tables(base_tables)
    south = copy_tables(base_tables)
    for t in north.values():
        for c in t:
            t[c] = t[c][:3]
    for t in south.values():
        for c in t:
            t[c] = t[c][3:]
    a = write_a(tmp_path / "sky.north.fits", north)
    b = write_a(tmp_path / "sky.south.fits", south)
    outdir = tmp_path / "out"
    outdir.mkdir()
    code, res = cli([a, b, "-o", outdir], dummy_refset, capsys)
    assert code == 0 and not error_lines(res.err)
    assert sorted(p.name for p in outdir.iterdir()) == ["sky.north_slsz.fits", "sky.south_slsz.fits"]
    np.testing.assert_array_equal(catalog(outdir / "sky.north_slsz.fits")["OBJID"], north["GV"]["OBJID"])
    np.testing.assert_array_equal(catalog(outdir / "sky.south_slsz.fits")["OBJID"], south["GV"]["OBJID"])
    # Collisions: one name in two directories, and a file beside its gzipped copy.
    (tmp_path / "other").mkdir()
    twin = tmp_path / "other" / "sky.north.fits"
    shutil.copy(a, twin)
    gz = tmp_path / "sky.north.fits.gz"
    import gzip
    gz.write_bytes(gzip.compress(a.read_bytes()))

    def forbidden(*args, **kw):
        raise AssertionError("a spectrum was read before the collision was refused")
    monkeypatch.setattr(products.ProductReader, "iter_chunks", forbidden)
    for pair in ((a, twin), (a, gz)):
        empty = tmp_path / f"empty_{len(list(tmp_path.iterdir()))}"
        empty.mkdir()
        line = _refused_by_cli([*pair, "-o", empty], dummy_refset, capsys, list(pair),
                               empty / "sky.north_slsz.fits", "sky.north_slsz.fits", "rename one of them")
        assert str(pair[0]) in line and str(pair[1]) in line
        assert list(empty.iterdir()) == []


# -- 4. CHECKSUM / DATASUM of the input
def _flip_data_byte(path, ext, offset=1000):
    with fitsio.FITS(str(path)) as f:
        start = f[ext].get_offsets()["data_start"]
    raw = bytearray(Path(path).read_bytes())
    raw[start + offset] ^= 0x01
    Path(path).write_bytes(bytes(raw))


def test_checksum_failure_refused_unless_ignored(base_tables, clean, dummy_refset, tmp_path, capsys):
    """Issue 16 case 4: a product whose DATASUM fails is refused in one sentence; --ignore-checksum
    processes it and says INCHKSUM = 'FAILED' in the output headers (valid: 'VALID', none: 'ABSENT')."""
    good = write_a(tmp_path / "good.fits", copy_tables(base_tables), checksum=True)
    rotten = tmp_path / "rotten.fits"
    shutil.copy(good, rotten)
    _flip_data_byte(rotten, "SPEC_GV")
    out = tmp_path / "out.fits"
    _refused_by_cli([rotten, "-o", out], dummy_refset, capsys, [rotten], out,
                    "rotten.fits", "fails its FITS checksum", "SPEC_GV", "DATASUM", "--ignore-checksum")
    assert no_temp_files(tmp_path)
    before = sha256(rotten)
    code, res = cli([rotten, "-o", out, "--ignore-checksum"], dummy_refset, capsys)
    assert code == 0 and not error_lines(res.err) and sha256(rotten) == before
    assert _header(out, "INCHKSUM") == ("FAILED", "FAILED")
    with fits.open(out, checksum=True) as hdul:             # the output's own checksums are fresh and hold
        assert all(h.verify_checksum() == 1 for h in hdul)
    code, _ = cli([good, "-o", tmp_path / "good_out.fits"], dummy_refset, capsys)
    assert code == 0 and _header(tmp_path / "good_out.fits", "INCHKSUM") == ("VALID", "VALID")
    code, _ = cli([clean[0], "-o", tmp_path / "clean_out.fits"], dummy_refset, capsys)
    assert code == 0 and _header(tmp_path / "clean_out.fits", "INCHKSUM") == ("ABSENT", "ABSENT")
    # A damaged DATASUM card (cfitsio cannot even read it) is a failing checksum too.
    damaged = _corrupt_card(good, tmp_path / "damaged.fits")
    out = tmp_path / "damaged_out.fits"
    _refused_by_cli([damaged, "-o", out], dummy_refset, capsys, [damaged], out, "damaged.fits",
                    "fails its FITS checksum", "SPEC_GI")


# -- 5. the input replaced or modified while the run works on it
@pytest.fixture
def two_products(base_tables, tmp_path):
    """The clean product with an EXTRA extension saying 'first', and a 3-object one saying 'second'."""
    def marked(path, tables, word):
        extra = fits.BinTableHDU.from_columns([fits.Column(name="WHO", format="8A", array=[word])], name="EXTRA")
        return write_a(path, tables, extra_hdus=[extra])
    small = copy_tables(base_tables)
    for t in small.values():
        for c in t:
            t[c] = t[c][:3]
    first = marked(tmp_path / "input.fits", copy_tables(base_tables), "first")
    second = marked(tmp_path / "replacement.fits", small, "second")
    return first, second


def test_input_replaced_during_the_run_output_is_the_measured_file(two_products, stage, tmp_path, monkeypatch):
    """Issue 16 case 5: another product renamed over the input while the stage measures it: the
    output is made entirely from the file that was opened and measured (its catalogue, its
    extensions, its sha256 in INSHA256), never a mix of the two."""
    first, second = two_products
    first_sha = sha256(first)
    real = stage.measure_chunk
    calls = []

    def replace_then_measure(bands, n, chunk_index):
        if not calls:
            os.replace(second, first)                    # `mv replacement.fits input.fits`
        calls.append(n)
        return real(bands, n, chunk_index)
    monkeypatch.setattr(stage, "measure_chunk", replace_then_measure)
    out = tmp_path / "out.fits"
    result = stage.run([first], out)
    assert result.exit_code == 0 and calls
    with fits.open(out) as hdul:
        assert len(hdul[EXT_REDSHIFT].data) == N_OBJ
        assert list(hdul["SPEC_GV"].data["OBJID"]) == list(hdul[EXT_REDSHIFT].data["OBJID"])
        assert hdul["EXTRA"].data["WHO"][0] == "first"
        assert hdul[EXT_REDSHIFT].header["INSHA256"] == first_sha
    assert no_temp_files(tmp_path)


def test_input_modified_in_place_during_the_run_is_refused(two_products, stage, tmp_path, monkeypatch):
    """Issue 16 case 5: the input rewritten in place (`cp other input`) while it is measured: the
    copy would mix two files, so the run fails in one sentence and writes nothing."""
    first, second = two_products
    real = stage.measure_chunk

    def overwrite_then_measure(bands, n, chunk_index):
        shutil.copyfile(second, first)                   # same inode, new content
        return real(bands, n, chunk_index)
    monkeypatch.setattr(stage, "measure_chunk", overwrite_then_measure)
    out = tmp_path / "out.fits"
    result = stage.run([first], out)
    assert_refused(result, first, "was modified while it was being processed")
    assert not out.exists() and no_temp_files(tmp_path)


# -- 6. two runs writing the same new output
def test_two_writers_of_the_same_new_output_one_wins(clean, stage, tmp_path, monkeypatch):
    """Issue 16 case 6: without overwrite the final step is exclusive (hard link, then unlink the
    temporary file): of two writers that both found the name free, exactly one succeeds; the other
    fails in one sentence and the winner's file is intact. Also through the stage."""
    import threading
    from csst_sls_z.datamodel import empty_redshift_table
    real_write = product_writer._write_hdulist
    barrier = threading.Barrier(2, timeout=60)

    def write_then_wait(hdul, tmp):
        real_write(hdul, tmp)
        barrier.wait()                                   # both are complete and about to commit
    monkeypatch.setattr(product_writer, "_write_hdulist", write_then_wait)
    out = tmp_path / "race.fits"
    outcome = {}

    def writer(k):
        cat = empty_redshift_table(N_OBJ)
        cat["OBJID"] = clean[1]["OBJID"]
        try:
            products.write_redshift_product(out, clean[0], cat, [("WRITER", k, "which writer")])
            outcome[k] = "ok"
        except FileExistsError as exc:
            outcome[k] = str(exc)
    threads = [threading.Thread(target=writer, args=(k,)) for k in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    winners = [k for k, v in outcome.items() if v == "ok"]
    assert len(winners) == 1, outcome
    loser = outcome[3 - winners[0]]
    assert "race.fits" in loser and "created by another process" in loser and "\n" not in loser
    assert _header(out, "WRITER") == (winners[0], winners[0])
    assert no_temp_files(tmp_path)

    # The stage: another run's file appears while this one writes; it is kept, this run fails.
    def another_run_finishes_first(hdul, tmp):
        real_write(hdul, tmp)
        (tmp_path / "stage.fits").write_bytes(b"the other run's output")
    monkeypatch.setattr(product_writer, "_write_hdulist", another_run_finishes_first)
    result = stage.run([clean[0]], tmp_path / "stage.fits")
    assert_refused(result, tmp_path / "stage.fits", "created by another process")
    assert (tmp_path / "stage.fits").read_bytes() == b"the other run's output" and no_temp_files(tmp_path)


# -- 8. reference overrides are validated like any reference file
def _bit_flipped_copy(src, dst):
    shutil.copy(src, dst)
    with fitsio.FITS(str(dst)) as f:
        start, end = f[1].get_offsets()["data_start"], f[1].get_offsets()["data_end"]
    raw = bytearray(Path(dst).read_bytes())
    raw[(start + end) // 2] ^= 0x04                       # one bit of one weight
    Path(dst).write_bytes(bytes(raw))
    return dst


def test_reference_override_is_validated_before_any_spectrum(dummy_refset, product_copy, tmp_path, capsys,
                                                            monkeypatch):
    """Issue 16 case 8: a bit-flipped backbone passed as $CSST_SLS_Z_REF_BACKBONE fails its own
    DATASUM: refused in one sentence before any spectrum is read (and so is one without checksums)."""
    def forbidden(*a, **k):
        raise AssertionError("a spectrum was read before the reference override was validated")
    monkeypatch.setattr(products.ProductReader, "iter_chunks", forbidden)
    flipped = _bit_flipped_copy(dummy_refset / "backbone.fits", tmp_path / "flipped_backbone.fits")
    monkeypatch.setenv("CSST_SLS_Z_REF_BACKBONE", str(flipped))
    out = tmp_path / "out.fits"
    _refused_by_cli([product_copy, "-o", out], dummy_refset, capsys, [product_copy], out,
                    "flipped_backbone.fits", "backbone", "fails its FITS checksum")
    with fits.open(dummy_refset / "backbone.fits") as hdul:
        hdul.writeto(tmp_path / "unsummed_backbone.fits", checksum="remove")
    monkeypatch.setenv("CSST_SLS_Z_REF_BACKBONE", str(tmp_path / "unsummed_backbone.fits"))
    _refused_by_cli([product_copy, "-o", out], dummy_refset, capsys, [product_copy], out,
                    "unsummed_backbone.fits", "no CHECKSUM/DATASUM")
    monkeypatch.setenv("CSST_SLS_Z_REF_BACKBONE", str(dummy_refset / "bnnhead.fits"))
    _refused_by_cli([product_copy, "-o", out], dummy_refset, capsys, [product_copy], out,
                    "bnnhead.fits", "REFTYPE='bnnhead', expected 'backbone'")


# -- 9. malformed manifests
MALFORMED_MANIFESTS = {
    "a_list": (lambda m: [], "is a list, not a JSON object"),
    "entry_without_sha256": (lambda m: {**m, "files": [{k: v for k, v in e.items() if k != "sha256"}
                                                       for e in m["files"]]}, "has no sha256"),
    "entry_without_name": (lambda m: {**m, "files": [{k: v for k, v in e.items() if k != "name"}
                                                     for e in m["files"]]}, "has no name"),
    "entry_not_an_object": (lambda m: {**m, "files": ["backbone.fits"] + m["files"]}, "is a string, not an object"),
    "sha256_not_hex": (lambda m: {**m, "files": [{**e, "sha256": 12} for e in m["files"]]},
                       "not 64 hexadecimal digits"),
    "type_listed_twice": (lambda m: {**m, "files": m["files"] + m["files"][:1]}, "a second time"),
    "files_not_a_list": (lambda m: {**m, "files": {"backbone": "backbone.fits"}}, "has no list of files"),
    "schema_version_text": (lambda m: {**m, "files": [{**e, "schema_version": "1"} for e in m["files"]]},
                            "not an integer"),
}


@pytest.mark.parametrize("name", list(MALFORMED_MANIFESTS))
def test_malformed_manifest_is_one_sentence(name, dummy_refset, product_copy, tmp_path, capsys):
    """Issue 16 case 9: an entry without sha256, a manifest that is `[]`, ...: one sentence naming
    the manifest and what is wrong, never a raw KeyError or AttributeError."""
    refs = tmp_path / "refs"
    shutil.copytree(dummy_refset, refs)
    edit, words = MALFORMED_MANIFESTS[name]
    manifest = json.loads((refs / "manifest.json").read_text())
    (refs / "manifest.json").write_text(json.dumps(edit(manifest)))
    out = tmp_path / "out.fits"
    _refused_by_cli([product_copy, "-o", out], refs, capsys, [product_copy], out,
                    f"manifest {refs / 'manifest.json'}", words)


# -- 10. the longest legal output names
@pytest.mark.parametrize("name", ["o" * 245 + ".fits", "o" * 250 + ".fits", "\u00e9" * 120 + ".fits"],
                         ids=["250_bytes", "255_bytes", "utf8_245_bytes"])
def test_longest_legal_output_name_works(name, clean, stage, tmp_path, monkeypatch):
    """Issue 16 case 10: an output name up to the file system's limit (255 bytes) is written: the
    temporary name is cut to fit, never longer than the limit."""
    seen = []
    real_write = product_writer._write_hdulist

    def record(hdul, tmp):
        seen.append(Path(tmp).name)
        real_write(hdul, tmp)
    monkeypatch.setattr(product_writer, "_write_hdulist", record)
    out = tmp_path / name
    result, cat = run_one(stage, clean[0], out)
    assert result.exit_code == 0 and len(cat) == N_OBJ
    assert seen and len(os.fsencode(seen[0])) <= 255 and seen[0].startswith(".") and seen[0].endswith(".tmp")


# -- 11. messages
def test_output_parent_that_is_a_file_is_named_as_such(product_copy, dummy_refset, tmp_path, capsys):
    """Issue 16 case 11: an output whose directory is a file says so, not 'does not exist'."""
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    second = tmp_path / "second.fits"
    shutil.copy(product_copy, second)
    for args, words in (([product_copy, "-o", afile / "out.fits"], ("afile", "is a file")),
                        ([product_copy, second, "-o", afile], ("afile", "not a directory"))):
        code, res = cli(args, dummy_refset, capsys)
        lines = error_lines(res.err)
        assert code == 1 and len(lines) == 1 and "does not exist" not in lines[0], lines
        for word in words:
            assert word in lines[0], lines[0]
    assert afile.read_text() == "not a directory"


def test_disk_full_is_reported_once_in_the_documented_words(product_copy, dummy_refset, tmp_path, capsys,
                                                            monkeypatch):
    """Issue 16 case 11: a real ENOSPC inside astropy's writer (which re-raises it as 'Not enough
    space on disk: ...' when the free space is short) is reported once, as docs/robustness.md says:
    `cannot write output X (No space left on device)`."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    import astropy.utils.data
    monkeypatch.setattr(astropy.utils.data, "get_free_space_in_dir", lambda *a, **k: 0)
    real_write = product_writer._write_hdulist

    def onto_a_full_disk(hdul, tmp):
        Path(tmp).unlink()
        os.symlink("/dev/full", tmp)                      # every write: ENOSPC, as on a full disk
        real_write(hdul, tmp)
    monkeypatch.setattr(product_writer, "_write_hdulist", onto_a_full_disk)
    out = tmp_path / "out.fits"
    code, res = cli([product_copy, "-o", out], dummy_refset, capsys)
    lines = error_lines(res.err)
    assert code == 1 and lines == [f"csst-sls-z run: error: cannot write output {out} (No space left on device)"]
    assert res.err.count("No space left on device") == 1 and "Not enough space" not in res.err
    assert not out.exists() and no_temp_files(tmp_path)



def test_disk_full_while_the_catalogue_rows_are_kept(product_copy, dummy_refset, tmp_path, capsys, monkeypatch):
    """Issue 17: the stage keeps the catalogue rows in a file beside the output while it measures
    (products.CatalogRows); a full disk there is one sentence naming the output, nothing is left."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    from csst_sls_z.products import catalog_rows
    monkeypatch.setattr(catalog_rows.tempfile, "TemporaryFile", lambda **kw: open("/dev/full", "w+b"))
    out = tmp_path / "out.fits"
    before = sha256(product_copy)
    code, res = cli([product_copy, "-o", out, "--chunk-size", "8"], dummy_refset, capsys)
    lines = error_lines(res.err)
    assert code == 1 and lines == [f"csst-sls-z run: error: cannot keep the catalogue rows of output {out} in its "
                                   "directory (No space left on device)"]
    assert not out.exists() and no_temp_files(tmp_path) and sha256(product_copy) == before

def test_library_warnings_do_not_reach_stderr_raw(base_tables, dummy_refset, tmp_path, capsys, monkeypatch):
    """Issue 16 case 11: astropy's warning about bytes after the last HDU is not repeated (the reader
    says it once, in the log); a warning fitsio raises while reading (FITSRuntimeWarning, numpy's
    RuntimeWarning) is logged as one line naming the file, never raw."""
    import warnings
    real_read = fitsio.hdu.table.TableHDU.read

    def read_and_warn(self, *a, **k):
        warnings.warn("a warning from inside fitsio", fitsio.FITSRuntimeWarning)
        return real_read(self, *a, **k)
    monkeypatch.setattr(fitsio.hdu.table.TableHDU, "read", read_and_warn)
    path = write_a(tmp_path / "odd.fits", copy_tables(base_tables))
    path.write_bytes(path.read_bytes() + b"\0" * 100)          # 100 bytes after the last HDU
    out = tmp_path / "out.fits"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, res = cli([path, "-o", out], dummy_refset, capsys)
    assert code == 0 and out.is_file()
    escaped = [f"{w.category.__name__}: {w.message}" for w in caught
               if w.category.__module__.split(".")[0] in ("astropy", "fitsio")]
    assert not escaped, escaped
    assert res.err.count("has 100 bytes after its last HDU") == 1 and "extra padding" not in res.err
    logged = [line for line in res.err.splitlines() if "a warning from inside fitsio" in line]
    assert logged and all("FITSRuntimeWarning" in line and "odd.fits" in line for line in logged)
