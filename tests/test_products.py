"""Tests for csst_sls_z.products: reading both input layouts and writing SLS_REDSHIFT.

Every product here is a tiny synthetic file written with astropy in tmp_path.
"""
from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
from pathlib import Path

import fitsio
import numpy as np
import pytest
from astropy.io import fits

from csst_sls_z import datamodel as dm
from csst_sls_z import products
from csst_sls_z.products import writer as product_writer
from csst_sls_z.products import (BandData, ProductError, ProductReader, open_product, stable_objid,
                                 write_redshift_product)


# ---------------------------------------------------------------------------- builders
def _spectrum(rng, n, start=6000.0):
    wave = start + 10.0 * np.arange(n)
    flux = rng.normal(1.0, 0.3, n).astype(np.float32)
    err = rng.uniform(0.1, 0.2, n).astype(np.float32)
    return wave, flux, err


def _spec_table(band, objs, var=False, radec=True, extra=True):
    """A layout-A SPEC_<band> table from [(objid, wave, flux, err, ra, dec), ...]."""
    ids = np.array([o[0] for o in objs], dtype=np.int64)
    cols = [fits.Column(name=dm.COL_OBJID, format="K", array=ids)]
    if radec:
        cols += [fits.Column(name=dm.COL_RA, format="D", unit="deg", array=[o[4] for o in objs]),
                 fits.Column(name=dm.COL_DEC, format="D", unit="deg", array=[o[5] for o in objs])]
    waves = [np.asarray(o[1], np.float64) for o in objs]
    fluxes = [np.asarray(o[2], np.float32) for o in objs]
    errs = [np.asarray(o[3], np.float32) for o in objs]
    if var:
        wcol = fits.Column(name=dm.COL_WAVE, format="PD()", unit=dm.WAVE_UNIT,
                           array=np.array(waves, dtype=object))
        fcol = fits.Column(name=dm.COL_FLUX, format="PE()", unit=dm.FLUX_UNIT,
                           array=np.array(fluxes, dtype=object))
        ecol = fits.Column(name=dm.COL_ERR, format="PE()", unit=dm.FLUX_UNIT,
                           array=np.array(errs, dtype=object))
    else:
        n = len(waves[0]) if waves else 4
        shape = (len(objs), n)
        wcol = fits.Column(name=dm.COL_WAVE, format=f"{n}D", unit=dm.WAVE_UNIT,
                           array=np.array(waves).reshape(shape) if objs else np.zeros(shape))
        fcol = fits.Column(name=dm.COL_FLUX, format=f"{n}E", unit=dm.FLUX_UNIT,
                           array=np.array(fluxes).reshape(shape) if objs else np.zeros(shape, np.float32))
        ecol = fits.Column(name=dm.COL_ERR, format=f"{n}E", unit=dm.FLUX_UNIT,
                           array=np.array(errs).reshape(shape) if objs else np.zeros(shape, np.float32))
    cols += [wcol, fcol, ecol]
    if extra:
        cols.append(fits.Column(name="EXTRA", format="J", array=np.arange(len(objs))))
    return fits.BinTableHDU.from_columns(cols, name=dm.EXT_SPEC[band])


def _primary(**cards):
    hdr = fits.Header()
    for k, v in dm.PRIMARY_KEYS.items():
        hdr[k] = v
    hdr["OBSID"] = ("10160000123", "observation id")
    for k, v in cards.items():
        hdr[k] = v
    return fits.PrimaryHDU(header=hdr)


def _objects(rng, ids, n=6, var=False, start=6000.0):
    out = []
    for k, objid in enumerate(ids):
        m = n + (k % 3) if var else n
        w, f, e = _spectrum(rng, m, start)
        out.append((objid, w, f, e, 150.0 + k, 2.0 + k))
    return out


def _write_a(path, gv=None, gi=None, var=False, radec=True, extra_hdus=()):
    hdus = [_primary()]
    if gv is not None:
        hdus.append(_spec_table("GV", gv, var=var, radec=radec))
    if gi is not None:
        hdus.append(_spec_table("GI", gi, var=var, radec=radec))
    hdus.extend(extra_hdus)
    fits.HDUList(hdus).writeto(path)
    return Path(path)


def _pixel_hdu(band, wave, flux, err, **cards):
    hdu = fits.BinTableHDU.from_columns([
        fits.Column(name=dm.COL_WAVE, format="D", array=wave),
        fits.Column(name=dm.COL_FLUX, format="E", array=flux),
        fits.Column(name=dm.COL_ERR, format="E", array=err)])
    hdu.header[dm.KEY_BAND] = band
    for k, v in cards.items():
        hdu.header[k] = v
    return hdu


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _all_chunks(reader, chunk_size):
    """Concatenate every chunk back into per-object lists of (wave, flux, err) or None."""
    out = {b: [] for b in dm.BANDS_USED}
    for sl, bands in reader.iter_chunks(chunk_size):
        for band, bd in bands.items():
            assert isinstance(bd, BandData)
            assert bd.offsets.dtype == np.int64 and len(bd.offsets) == sl.stop - sl.start + 1
            assert bd.wave.dtype == bd.flux.dtype == bd.err.dtype == np.float64
            for k in range(sl.stop - sl.start):
                out[band].append(bd.pixels(k) if bd.present[k] else None)
                if not bd.present[k]:
                    assert bd.offsets[k] == bd.offsets[k + 1]
    return out


def _assert_object(got, obj):
    assert got is not None
    np.testing.assert_array_equal(got[0], np.asarray(obj[1], np.float64))
    np.testing.assert_array_equal(got[1], np.asarray(obj[2], np.float32).astype(np.float64))
    np.testing.assert_array_equal(got[2], np.asarray(obj[3], np.float32).astype(np.float64))


# ---------------------------------------------------------------------------- layout A
@pytest.mark.parametrize("var", [False, True], ids=["fixed", "varlen"])
def test_layout_a_round_trip(tmp_path, var):
    rng = np.random.default_rng(1)
    gv = _objects(rng, [11, 12, 13], var=var)
    gi = _objects(rng, [11, 12, 13], var=var, start=8000.0)
    path = _write_a(tmp_path / "a.fits", gv, gi, var=var)
    with open_product(path) as rd:
        assert rd.layout == "A"
        assert rd.n_objects == 3
        assert rd.objid.dtype == np.int64
        np.testing.assert_array_equal(rd.objid, [11, 12, 13])
        np.testing.assert_array_equal(rd.ra, [150.0, 151.0, 152.0])
        np.testing.assert_array_equal(rd.dec, [2.0, 3.0, 4.0])
        assert rd.primary_header["TELESCOP"] == "CSST"
        assert rd.duplicate_objids.size == 0
        got = _all_chunks(rd, 10)
    for k in range(3):
        _assert_object(got["GV"][k], gv[k])
        _assert_object(got["GI"][k], gi[k])


def test_join_by_objid_union_order(tmp_path):
    rng = np.random.default_rng(2)
    gv = _objects(rng, [10, 20, 30], var=True)
    gi = _objects(rng, [30, 40, 10], var=True, start=8000.0)
    # GI has no RA/DEC: object 40 (GI only) must get NaN, the others take GV's.
    hdus = [_primary(), _spec_table("GV", gv, var=True),
            _spec_table("GI", gi, var=True, radec=False)]
    path = tmp_path / "join.fits"
    fits.HDUList(hdus).writeto(path)
    with open_product(path) as rd:
        np.testing.assert_array_equal(rd.objid, [10, 20, 30, 40])
        np.testing.assert_array_equal(rd.ra[:3], [150.0, 151.0, 152.0])
        assert np.isnan(rd.ra[3]) and np.isnan(rd.dec[3])
        (sl, bands), = list(rd.iter_chunks(100))
        assert sl == slice(0, 4)
        np.testing.assert_array_equal(bands["GV"].present, [True, True, True, False])
        np.testing.assert_array_equal(bands["GI"].present, [True, False, True, True])
        got = _all_chunks(rd, 100)
    _assert_object(got["GV"][0], gv[0])
    _assert_object(got["GV"][2], gv[2])
    _assert_object(got["GI"][0], gi[2])   # object 10 is GI row 2
    _assert_object(got["GI"][2], gi[0])   # object 30 is GI row 0
    _assert_object(got["GI"][3], gi[1])   # object 40 is GI row 1
    assert got["GV"][3] is None and got["GI"][1] is None


def test_only_one_band_and_extras_ignored(tmp_path):
    rng = np.random.default_rng(3)
    gi = _objects(rng, [5, 6])
    gu = _spec_table("GU", _objects(rng, [7]))
    truth = fits.BinTableHDU.from_columns([fits.Column(name="OBJID", format="K", array=[5, 6]),
                                           fits.Column(name="Z_TRUE", format="D", array=[0.5, 1.0])],
                                          name=dm.EXT_TRUTH)
    path = _write_a(tmp_path / "gi_only.fits", gi=gi, extra_hdus=[gu, truth])
    with open_product(path) as rd:
        np.testing.assert_array_equal(rd.objid, [5, 6])
        got = _all_chunks(rd, 1)
    assert got["GV"] == [None, None]
    _assert_object(got["GI"][1], gi[1])


def test_radec_absent_gives_nan(tmp_path):
    rng = np.random.default_rng(4)
    path = _write_a(tmp_path / "noradec.fits", _objects(rng, [1, 2]), radec=False)
    with open_product(path) as rd:
        assert rd.ra.dtype == np.float64 and np.all(np.isnan(rd.ra)) and np.all(np.isnan(rd.dec))


def test_chunked_iteration_matches_one_chunk(tmp_path):
    rng = np.random.default_rng(5)
    gv = _objects(rng, [1, 2, 3, 4, 5, 6, 7], var=True)
    gi = _objects(rng, [7, 6, 9, 3, 1], var=True, start=8000.0)
    path = _write_a(tmp_path / "chunks.fits", gv, gi, var=True)
    with open_product(path) as rd:
        one = _all_chunks(rd, 1000)
        slices = [sl for sl, _ in rd.iter_chunks(3)]
        three = _all_chunks(rd, 3)
    assert slices == [slice(0, 3), slice(3, 6), slice(6, 8)]
    for band in dm.BANDS_USED:
        assert len(one[band]) == len(three[band]) == 8
        for a, b in zip(one[band], three[band]):
            assert (a is None) == (b is None)
            if a is not None:
                for x, y in zip(a, b):
                    np.testing.assert_array_equal(x, y)


def test_bad_values_pass_through(tmp_path):
    w = np.array([6010.0, 6000.0, 6020.0])           # unsorted
    f = np.array([np.nan, 1.0, np.inf], np.float32)
    e = np.array([0.1, -1.0, 0.0], np.float32)       # ERR <= 0
    path = _write_a(tmp_path / "bad.fits", [(1, w, f, e, 1.0, 2.0)])
    with open_product(path) as rd:
        got = _all_chunks(rd, 5)
    np.testing.assert_array_equal(got["GV"][0][0], w)
    np.testing.assert_array_equal(got["GV"][0][1], f.astype(np.float64))
    np.testing.assert_array_equal(got["GV"][0][2], e.astype(np.float64))


def test_duplicate_objids_recorded(tmp_path, caplog):
    rng = np.random.default_rng(6)
    gv = _objects(rng, [1, 2, 1, 3])
    gi = _objects(rng, [3, 3, 4], start=8000.0)
    path = _write_a(tmp_path / "dup.fits", gv, gi)
    with caplog.at_level(logging.WARNING, logger=products.__name__):
        rd = open_product(path)
    try:
        np.testing.assert_array_equal(rd.objid, [1, 2, 3, 4])
        np.testing.assert_array_equal(np.sort(rd.duplicate_objids), [1, 3])
        got = _all_chunks(rd, 10)
    finally:
        rd.close()
    assert any("more than once" in r.getMessage() for r in caplog.records)
    _assert_object(got["GV"][0], gv[0])     # first occurrence kept
    _assert_object(got["GI"][2], gi[0])


def test_zero_rows_opens_empty(tmp_path):
    path = _write_a(tmp_path / "empty.fits", [], [])
    with open_product(path) as rd:
        assert rd.n_objects == 0
        assert list(rd.iter_chunks(10)) == []


# ---------------------------------------------------------------------------- layout B
def test_layout_b_multi_hdu(tmp_path):
    rng = np.random.default_rng(7)
    gv, gi, gu = _spectrum(rng, 8), _spectrum(rng, 9, 8000.0), _spectrum(rng, 5, 3000.0)
    hdus = [_primary(OBJID=4242, RA=10.5, DEC=-3.25), _pixel_hdu("GU", *gu),
            _pixel_hdu("GI", *gi), _pixel_hdu("GV", *gv)]
    path = tmp_path / "single.fits"
    fits.HDUList(hdus).writeto(path)
    with open_product(path) as rd:
        assert rd.layout == "B"
        np.testing.assert_array_equal(rd.objid, [4242])
        assert rd.ra[0] == 10.5 and rd.dec[0] == -3.25
        got = _all_chunks(rd, 4)
    _assert_object(got["GV"][0], (0,) + gv)
    _assert_object(got["GI"][0], (0,) + gi)


def test_layout_b_objid_from_extension_and_stem(tmp_path):
    rng = np.random.default_rng(8)
    a, b, c = _spectrum(rng, 4), _spectrum(rng, 5, 8000.0), _spectrum(rng, 6)
    # Extension OBJIDs give two objects in one file; GI-only object 2 comes last.
    hdus = [_primary(), _pixel_hdu("GV", *a, OBJID=1), _pixel_hdu("GI", *b, OBJID=2),
            _pixel_hdu("GV", *c, OBJID=3)]
    path = tmp_path / "multi.fits"
    fits.HDUList(hdus).writeto(path)
    with open_product(path) as rd:
        np.testing.assert_array_equal(rd.objid, [1, 3, 2])
        assert np.isnan(rd.ra).all()
        got = _all_chunks(rd, 2)
    _assert_object(got["GV"][1], (0,) + c)
    _assert_object(got["GI"][2], (0,) + b)

    # No OBJID anywhere: the stem, as an integer or as a stable hash.
    for name, expected in (("12345.fits", 12345), ("galaxy_a.fits.gz", None)):
        p = tmp_path / name
        fits.HDUList([_primary(), _pixel_hdu("GV", *a)]).writeto(p)
        want = expected if expected is not None else int(hashlib.sha1(b"galaxy_a").hexdigest()[:15], 16)
        assert stable_objid(p.name.split(".")[0]) == want
        with open_product(p) as rd:
            assert rd.objid.tolist() == [want]


# ---------------------------------------------------------------------------- errors
def _no_spec(path):
    fits.HDUList([_primary(), fits.BinTableHDU.from_columns(
        [fits.Column(name="X", format="E", array=[1.0])], name="OTHER")]).writeto(path)


def _missing_flux(path):
    rng = np.random.default_rng(9)
    hdu = _spec_table("GV", _objects(rng, [1, 2]))
    cols = [c for c in hdu.columns if c.name != dm.COL_FLUX]
    fits.HDUList([_primary(), fits.BinTableHDU.from_columns(cols, name="SPEC_GV")]).writeto(path)


def _varlen_mismatch(path):
    rng = np.random.default_rng(10)
    objs = _objects(rng, [1, 2, 3], var=True)
    w, f, e = objs[1][1], objs[1][2], objs[1][3]
    objs[1] = (2, w, f[:-1], e, 0.0, 0.0)
    _write_a(path, objs, var=True)


def _fixed_mismatch(path):
    cols = [fits.Column(name="OBJID", format="K", array=[1]),
            fits.Column(name="WAVELENGTH", format="4D", array=np.ones((1, 4))),
            fits.Column(name="FLUX", format="3E", array=np.ones((1, 3))),
            fits.Column(name="ERR", format="4E", array=np.ones((1, 4)))]
    fits.HDUList([_primary(), fits.BinTableHDU.from_columns(cols, name="SPEC_GI")]).writeto(path)


def _string_flux(path):
    cols = [fits.Column(name="OBJID", format="K", array=[1]),
            fits.Column(name="WAVELENGTH", format="4D", array=np.ones((1, 4))),
            fits.Column(name="FLUX", format="4A", array=["abcd"]),
            fits.Column(name="ERR", format="4E", array=np.ones((1, 4)))]
    fits.HDUList([_primary(), fits.BinTableHDU.from_columns(cols, name="SPEC_GV")]).writeto(path)


def _truncated(cut):
    def make(path):
        rng = np.random.default_rng(11)
        _write_a(path, _objects(rng, range(40), n=50), _objects(rng, range(40), n=50))
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[:cut(len(data))])
    return make


def _truncated_in_header(path):
    rng = np.random.default_rng(11)
    _write_a(path, _objects(rng, range(4)), _objects(rng, range(4)))
    with fitsio.FITS(str(path)) as f:
        gi_header = f[2].get_offsets()["header_start"]
    Path(path).write_bytes(Path(path).read_bytes()[:gi_header + 1000])


@pytest.mark.parametrize("make, words", [
    (lambda p: Path(p).write_bytes(b"this is not a FITS file\n" * 200), "not a FITS file"),
    (lambda p: Path(p).write_bytes(b""), "not a FITS file"),
    (_truncated(lambda n: n - 3000), "truncated"),
    (_truncated(lambda n: n // 2 + 100), "truncated"),
    (_truncated_in_header, "truncated"),
    (_no_spec, "no SPEC_GV or SPEC_GI table"),
    (_missing_flux, "no FLUX column"),
    (_varlen_mismatch, "different lengths"),
    (_fixed_mismatch, "different lengths"),
    (_string_flux, "cannot be read as real numbers"),
], ids=["nonfits", "emptyfile", "truncated-data", "truncated-middle",
        "truncated-header", "nospec", "noflux",
        "varlen-mismatch", "fixed-mismatch", "string-flux"])
def test_product_errors_are_one_sentence(tmp_path, make, words):
    path = tmp_path / "broken_input.fits"
    make(path)
    with pytest.raises(ProductError) as info:
        with open_product(path) as rd:     # errors may surface at open or while reading
            for _ in rd.iter_chunks(7):
                pass
    msg = str(info.value)
    assert "broken_input.fits" in msg
    assert words in msg
    assert "\n" not in msg


def test_missing_input_is_product_error(tmp_path):
    with pytest.raises(ProductError, match="does not exist"):
        open_product(tmp_path / "nope.fits")


# ---------------------------------------------------------------------------- writer
PROVENANCE = [("SLSZVER", "0.1.0", "csst_sls_z version"), ("DEPNAM00", "numpy", ""),
              ("DEPVER00", np.__version__, ""), ("NSAMPLE", np.int64(200), "BNN samples"),
              ("STATUS", "PERFECT", "stage status")]


def _catalog(objid):
    cat = dm.empty_redshift_table(len(objid))
    cat["OBJID"] = objid
    cat["Z"] = np.linspace(0.1, 1.0, len(objid))
    cat["ZWARN"] = int(dm.ZWarn.MISSING_BAND)
    return cat


def _data_bytes(path):
    """Data segment bytes of each named extension (to prove copies are byte-identical)."""
    raw = Path(path).read_bytes()
    out = {}
    with fitsio.FITS(str(path)) as f:
        for hdu in f[1:]:
            off = hdu.get_offsets()
            out[hdu.get_extname()] = raw[off["data_start"]:off["data_end"]]
    return out


@pytest.fixture
def product(tmp_path):
    rng = np.random.default_rng(12)
    truth = fits.BinTableHDU.from_columns([fits.Column(name="OBJID", format="K", array=[1, 2, 3])],
                                          name=dm.EXT_TRUTH)
    return _write_a(tmp_path / "in.fits", _objects(rng, [1, 2, 3], var=True),
                    _objects(rng, [2, 3], var=True, start=8000.0), var=True, extra_hdus=[truth])


def test_write_product(tmp_path, product):
    before = _sha256(product)
    with open_product(product) as rd:
        cat = _catalog(rd.objid)
        list(rd.iter_chunks(2))
        out = write_redshift_product(tmp_path / "out.fits", product, cat, PROVENANCE)
    assert _sha256(product) == before
    assert out == tmp_path / "out.fits"

    with fits.open(out, checksum=True) as hdul:
        for hdu in hdul:
            assert "CHECKSUM" in hdu.header and "DATASUM" in hdu.header
            assert hdu.verify_checksum() == 1 and hdu.verify_datasum() == 1
        names = [h.name for h in hdul]
        assert names == ["PRIMARY", "SPEC_GV", "SPEC_GI", dm.EXT_TRUTH, dm.EXT_REDSHIFT]
        prim = hdul[0].header
        for key in ("TELESCOP", "INSTRUME", "OBSID"):
            assert prim[key] == fits.getheader(product, 0)[key]
        ext = hdul[dm.EXT_REDSHIFT]
        for key, value, _ in PROVENANCE:
            want = value.item() if isinstance(value, np.generic) else value
            assert prim[key] == want and ext.header[key] == want
        data = ext.data
        assert len(data) == 3
        for i, col in enumerate(dm.REDSHIFT_COLUMNS, start=1):
            assert ext.header[f"TTYPE{i}"] == col.name
            assert ext.header[f"TFORM{i}"] == col.fits_format
            assert ext.header.get(f"TUNIT{i}", "") == col.unit
            assert data[col.name].dtype.newbyteorder("=") == np.dtype(col.dtype)
            np.testing.assert_array_equal(data[col.name], cat[col.name])
        # The input's spectra extensions, headers too (but for the checksum cards).
        with fits.open(product) as src:
            for name in ("SPEC_GV", "SPEC_GI", dm.EXT_TRUTH):
                a = {k: v for k, v in src[name].header.items() if k not in ("CHECKSUM", "DATASUM")}
                b = {k: v for k, v in hdul[name].header.items() if k not in ("CHECKSUM", "DATASUM")}
                assert a == b
    src_bytes, out_bytes = _data_bytes(product), _data_bytes(out)
    for name in ("SPEC_GV", "SPEC_GI", dm.EXT_TRUTH):
        assert src_bytes[name] == out_bytes[name]

    # The output reads back as a layout-A product with the same objects.
    with open_product(out) as rd:
        np.testing.assert_array_equal(rd.objid, [1, 2, 3])


def test_write_catalog_only_and_rerun_on_output(tmp_path, product):
    cat = _catalog(np.array([1, 2, 3]))
    out = write_redshift_product(tmp_path / "cat.fits", product, cat, PROVENANCE, catalog_only=True)
    with fits.open(out) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", dm.EXT_REDSHIFT]
        assert all(h.verify_checksum() == 1 for h in hdul)
    # Running again on a full output: its old SLS_REDSHIFT is replaced, not duplicated.
    full = write_redshift_product(tmp_path / "full.fits", product, cat, PROVENANCE)
    again = write_redshift_product(tmp_path / "again.fits", full, cat, PROVENANCE)
    with fits.open(again) as hdul:
        assert [h.name for h in hdul].count(dm.EXT_REDSHIFT) == 1


def test_write_refusals(tmp_path, product):
    cat = _catalog(np.array([1, 2, 3]))
    out = write_redshift_product(tmp_path / "out.fits", product, cat, PROVENANCE)
    stamp = _sha256(out)
    with pytest.raises(FileExistsError) as info:
        write_redshift_product(out, product, cat, PROVENANCE)
    assert "out.fits" in str(info.value) and "\n" not in str(info.value)
    assert _sha256(out) == stamp
    write_redshift_product(out, product, cat, PROVENANCE, overwrite=True)   # allowed when asked

    before = _sha256(product)
    for target in (product, tmp_path / "." / "in.fits"):
        with pytest.raises(ProductError, match="is the input"):
            write_redshift_product(target, product, cat, PROVENANCE, overwrite=True)
    assert _sha256(product) == before

    with pytest.raises(OSError) as info:
        write_redshift_product(tmp_path / "no_such_dir" / "x.fits", product, cat, PROVENANCE)
    assert "no_such_dir" in str(info.value) and "\n" not in str(info.value)

    with pytest.raises(ValueError):
        write_redshift_product(tmp_path / "y.fits", product, np.zeros(3, [("OBJID", "i8")]), PROVENANCE)
    assert not (tmp_path / "y.fits").exists()


def test_failed_write_leaves_nothing(tmp_path, product, monkeypatch):
    cat = _catalog(np.array([1, 2, 3]))
    before = sorted(os.listdir(tmp_path))

    def half_write(hdul, tmp):
        assert Path(tmp).parent == tmp_path and Path(tmp).exists()
        Path(tmp).write_bytes(b"SIMPLE  =" + b" " * 100)
        raise RuntimeError("disk full")

    monkeypatch.setattr(product_writer, "_write_hdulist", half_write)
    with pytest.raises(RuntimeError, match="disk full"):
        write_redshift_product(tmp_path / "out.fits", product, cat, PROVENANCE)
    assert sorted(os.listdir(tmp_path)) == before

    # An existing output is left as it was when overwriting fails.
    (tmp_path / "old.fits").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        write_redshift_product(tmp_path / "old.fits", product, cat, PROVENANCE, overwrite=True)
    assert (tmp_path / "old.fits").read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == sorted(before + ["old.fits"])


def test_reader_is_context_manager_and_closes(product):
    rd = ProductReader(product)
    rd.close()
    with pytest.raises(ValueError):
        list(rd.iter_chunks(1))


# ---------------------------------------------------------------------------- units, scaling, temporary names
def test_layout_b_units_and_scaled_integers(tmp_path):
    """Issue 16 cases 1-2, layout B: TUNIT (nm; W/m2/nm) and TSCAL/TZERO/TNULL on int16 columns are
    applied per HDU; the reader hands back float64 in Angstrom and 1e-17 erg/s/cm2/Angstrom."""
    wave_nm = 900.0 + np.arange(5)
    raw = np.array([10, 20, -32768, 40, 50], dtype=np.int16)
    hdu = fits.BinTableHDU.from_columns([
        fits.Column(name=dm.COL_WAVE, format="D", unit="nm", array=wave_nm),
        fits.Column(name=dm.COL_FLUX, format="I", unit="W/m2/nm", array=raw),
        fits.Column(name=dm.COL_ERR, format="I", unit="W/m2/nm", array=np.full(5, 7, np.int16))])
    hdu.header[dm.KEY_BAND] = "GI"
    hdu.header[dm.KEY_OBJID] = 5
    path = tmp_path / "b.fits"
    fits.HDUList([_primary(), hdu]).writeto(path)
    with fitsio.FITS(str(path), "rw") as f:
        for n in (2, 3):
            f[1].write_key(f"TSCAL{n}", 1e-21)
            f[1].write_key(f"TZERO{n}", 2e-20)
            f[1].write_key(f"TNULL{n}", -32768)
    with open_product(path) as rd:
        assert rd.units_assumed == [] and dict((k, v) for k, v, _ in rd.header_cards())[dm.KW_UNITS_ASSUMED] is False
        got = _all_chunks(rd, 1)["GI"][0]
    np.testing.assert_allclose(got[0], wave_nm * 10.0, rtol=1e-14)
    flux = (raw * 1e-21 + 2e-20) * 1e19           # W/m2/nm -> 1e-17 erg/s/cm2/Angstrom is x 1e19
    np.testing.assert_allclose(got[1][[0, 1, 3, 4]], flux[[0, 1, 3, 4]], rtol=1e-12)
    assert np.isnan(got[1][2])                     # TNULL: a missing pixel
    np.testing.assert_allclose(got[2], (7 * 1e-21 + 2e-20) * 1e19, rtol=1e-12)


def test_temporary_names_fit_the_file_system_limit(tmp_path):
    """Issue 16 case 10: ``.NAME.<8 hex>.tmp`` while it fits, NAME cut (at a character boundary) when not."""
    from csst_sls_z.durable import TempFile, temp_prefix
    assert temp_prefix(tmp_path / "out.fits") == ".out.fits."
    for name in ("x" * 251 + ".fits", "\u00e9" * 125 + ".fits", "y" * 240 + ".fits.gz"):
        tmp = TempFile(tmp_path / name)
        try:
            assert len(os.fsencode(tmp.path.name)) <= 255
            assert tmp.path.name.startswith(temp_prefix(tmp_path / name))
            tmp.path.name.encode("utf-8")          # never half a character
        finally:
            tmp.discard()
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------- layouts and the durable write
def test_layout_registry_and_a_new_layout_is_one_class(tmp_path, monkeypatch):
    """Each layout is a Layout subclass in the registry, tried in order; a new one (here a toy that
    keeps layout A's rows under other table names) is one class and one registry entry."""
    from csst_sls_z.products import layout as layout_mod
    from csst_sls_z.products import Layout, LayoutA, LayoutB, registered
    assert registered() == (LayoutA, LayoutB)
    assert all(issubclass(c, Layout) and c.name and c.wanted for c in registered())

    class LayoutToy(LayoutA):
        name, wanted = "TOY", "TOY_GV or TOY_GI table"

        @classmethod
        def detect(cls, reader, hdus):
            return {band: cls(reader, i, band, name) for band in dm.BANDS_USED
                    for i, kind, name in hdus if name == f"TOY_{band}"}

    rng = np.random.default_rng(11)
    gv = _objects(rng, [4, 5])
    table = _spec_table("GV", gv)
    table.name = "TOY_GV"
    path = tmp_path / "toy.fits"
    fits.HDUList([_primary(), table]).writeto(path)
    with pytest.raises(ProductError, match="no SPEC_GV or SPEC_GI table and no binary table with BAND=GV or GI"):
        open_product(path)
    monkeypatch.setattr(layout_mod, "registered", lambda: (LayoutA, LayoutB, LayoutToy))
    with open_product(path) as rd:
        assert rd.layout == "TOY" and rd.bands_present == ("GV",)
        np.testing.assert_array_equal(rd.objid, [4, 5])
        _assert_object(_all_chunks(rd, 10)["GV"][0], gv[0])
    fits.HDUList([_primary()]).writeto(tmp_path / "none.fits")
    with pytest.raises(ProductError, match="and no TOY_GV or TOY_GI table"):
        open_product(tmp_path / "none.fits")


def test_durable_temp_file_commits_or_leaves_nothing(tmp_path):
    """durable.TempFile: nothing lands unless committed; a failure leaves the target as it was;
    ``exclusive`` refuses an existing target; ``create=False`` names a free temporary file only."""
    from csst_sls_z.durable import TempFile, temp_glob, temp_prefix
    target = tmp_path / "t.dat"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with TempFile(target) as tmp:
            tmp.path.write_text("new")
            raise RuntimeError("failed half-way")
    with TempFile(target) as tmp:
        tmp.path.write_text("never committed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["t.dat"]
    with pytest.raises(FileExistsError, match="created by another process"):
        with TempFile(target) as tmp:
            tmp.path.write_text("new")
            tmp.commit(exclusive=True)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["t.dat"]
    with TempFile(target) as tmp:
        tmp.path.write_text("new")
        assert tmp.commit() == target
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["t.dat"]
    with TempFile(tmp_path / "fresh.dat") as tmp:
        tmp.path.write_text("first")
        tmp.commit(exclusive=True)
    assert (tmp_path / "fresh.dat").read_text() == "first"
    named = TempFile(target, create=False)
    assert not named.path.exists() and named.path.name.startswith(temp_prefix(target))
    assert any(fnmatch.fnmatch(named.path.name, pattern) for pattern in temp_glob(target))
    named.discard()


def test_simulated_product_is_written_through_the_durable_temp_file(tmp_path):
    """The simulator's writer stages under a durable temporary name and leaves nothing on abort."""
    from csst_sls_z import durable
    from csst_sls_z.simulation.product import ProductWriter
    target = tmp_path / "sim.fits"
    writer = ProductWriter(target, {})
    assert Path(writer.tmp).name.startswith(durable.temp_prefix(target))
    writer.abort()
    assert os.listdir(tmp_path) == []
    target.write_text("old")
    with pytest.raises(FileExistsError):
        ProductWriter(target, {})


@pytest.mark.parametrize("n_pz", [None, 7])
def test_catalogue_rows_on_disk_are_the_in_memory_catalogue(tmp_path, n_pz):
    """Issue 17: the stage appends its rows chunk by chunk to ``products.CatalogRows`` (on disk,
    copied in blocks); the output is byte for byte the one an in-memory table gives, the rows
    file leaves nothing behind, and an incomplete or overfull catalogue is refused."""
    src = Path(__file__).parent / "data" / "golden_input.fits"
    rng = np.random.default_rng(4)
    n = 23
    plain = dm.empty_redshift_table(n, n_pz)
    for name in plain.dtype.names:
        shape = plain[name].shape
        value = rng.random(shape) if plain.dtype[name].kind == "f" else rng.integers(0, 99, shape)
        if name == "Z":
            value[2] = np.nan
        plain[name] = value
    (tmp_path / "out").mkdir()
    a = products.write_redshift_product(tmp_path / "out" / "a.fits", src, plain, [("FOO", 1, "a card")])
    with products.CatalogRows(n, n_pz, tmp_path / "out") as rows:
        with pytest.raises(ValueError, match="only 0 of 23 catalogue rows"):
            rows.hdu()
        for start in range(0, n, 5):
            rows.append(plain[start:start + 5])
        with pytest.raises(ValueError, match="24 rows appended to a catalogue of 23"):
            rows.append(plain[:1])
        assert np.array_equal(rows.zwarn, plain["ZWARN"])
        b = products.write_redshift_product(tmp_path / "out" / "b.fits", src, rows, [("FOO", 1, "a card")])
    assert sorted(os.listdir(tmp_path / "out")) == ["a.fits", "b.fits"]       # no rows file left
    # Byte for byte but for the CHECKSUM/DATASUM comments, which carry the second of writing.
    skip = ("CHECKSUM", "DATASUM")
    with fits.open(a) as ha, fits.open(b, checksum=True) as hb:
        assert len(ha) == len(hb)
        for x, y in zip(ha, hb):
            assert y.verify_checksum() == 1 and y.verify_datasum() == 1
            assert x.header["DATASUM"] == y.header["DATASUM"]
            assert [c.image for c in x.header.cards if c.keyword not in skip] == \
                   [c.image for c in y.header.cards if c.keyword not in skip]
        np.testing.assert_array_equal(hb[dm.EXT_REDSHIFT].data["Z"], plain["Z"])
    raw_a, raw_b = a.read_bytes(), b.read_bytes()
    with fitsio.FITS(str(a)) as fa, fitsio.FITS(str(b)) as fb:
        for x, y in zip(fa, fb):
            oa, ob = x.get_offsets(), y.get_offsets()
            assert oa == ob and raw_a[oa["data_start"]:oa["data_end"]] == raw_b[ob["data_start"]:ob["data_end"]]


def test_catalogue_rows_that_cannot_be_written_say_which_output(tmp_path, monkeypatch):
    """A full disk while the rows are kept: one sentence naming the output, nothing left behind."""
    import errno
    (tmp_path / "out").mkdir()
    rows = products.CatalogRows(4, None, tmp_path / "out", label="output x.fits")

    def full(data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(rows._file, "write", full)
    with pytest.raises(OSError) as exc:
        rows.append(dm.empty_redshift_table(2))
    assert str(exc.value) == "cannot keep the catalogue rows of output x.fits in its directory (No space left on device)"
    monkeypatch.undo()
    rows.close()
    assert os.listdir(tmp_path / "out") == []
