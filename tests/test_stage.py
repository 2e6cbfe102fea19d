"""The stage end to end on simulated products, through a DUMMY reference set (real code path)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from conftest import edit_product, sha256
from csst_sls_z.datamodel import EXT_REDSHIFT, REDSHIFT_COLUMNS, StageStatus, ZWarn
from csst_sls_z.stage import RedshiftStage
from csst_sls_z.stage_cli import main as run_main


def _run(inp, out, refdir, **kw):
    stage = RedshiftStage(reference_dir=refdir, samples=kw.pop("samples", 16), **kw)
    return stage.run([inp], out)


def _catalog(path):
    with fits.open(path) as hdul:
        return hdul[EXT_REDSHIFT].data.copy(), hdul


def test_end_to_end(product_copy, dummy_refset, tmp_path):
    before = sha256(product_copy)
    out = tmp_path / "out.fits"
    result = _run(product_copy, out, dummy_refset)
    assert result.status in (StageStatus.PERFECT, StageStatus.WARNING)
    assert result.outputs == [str(out)]
    assert sha256(product_copy) == before                      # input untouched
    with fits.open(product_copy) as src:
        truth_ids = src["TRUTH"].data["OBJID"]
        gv_ids = src["SPEC_GV"].data["OBJID"]
    with fits.open(out, checksum=True) as hdul:
        for hdu in hdul:
            assert hdu.verify_checksum() == 1
        cat = hdul[EXT_REDSHIFT].data
        hdr = hdul[EXT_REDSHIFT].header
        assert list(cat["OBJID"]) == list(gv_ids)              # one row per object, input order
        assert len(cat) == len(truth_ids)
        for col in REDSHIFT_COLUMNS:
            assert cat[col.name].dtype.kind == np.dtype(col.dtype).kind
            assert cat[col.name].dtype.itemsize == np.dtype(col.dtype).itemsize
        assert [h.name for h in hdul][1:] == ["SPEC_GV", "SPEC_GI", "TRUTH", EXT_REDSHIFT]
        for key in ("SLSZVER", "REFSET", "REFSHA00", "DEPNAM00", "DEPVER00", "STATUS", "DATE-RED"):
            assert key in hdr and key in hdul[0].header
        assert hdul[0].header["TELESCOP"] == "CSST"
        measured = cat["ZWARN"] & int(ZWarn.NODATA) == 0
        assert np.all(np.isfinite(cat["Z"][measured]))
        assert np.all(cat["Z_LO"][measured] <= cat["Z"][measured])
        assert np.all(cat["Z"][measured] <= cat["Z_HI"][measured])
        # float32 columns: Z_HI and Z_LO each carry half an ulp of Z, so allow that beside rtol
        assert np.allclose(cat["ZERR"][measured], (cat["Z_HI"][measured] - cat["Z_LO"][measured]) / 2, rtol=1e-5,
                           atol=float(2 * np.finfo(np.float32).eps * np.max(np.abs(cat["Z_HI"][measured]))))
    counts = result.summary["zwarn_counts"]
    assert counts["OK"] + sum(1 for z in cat["ZWARN"] if z) == len(cat)


def test_reproducible(product_copy, dummy_refset, tmp_path):
    a, b, c = tmp_path / "a.fits", tmp_path / "b.fits", tmp_path / "c.fits"
    _run(product_copy, a, dummy_refset, seed=3)
    _run(product_copy, b, dummy_refset, seed=3)
    _run(product_copy, c, dummy_refset, seed=4)
    ca, cb, cc = (fits.getdata(p, EXT_REDSHIFT) for p in (a, b, c))
    for name in ca.names:
        assert np.array_equal(ca[name], cb[name], equal_nan=True), name
    assert not np.array_equal(ca["ZERR_RAW"], cc["ZERR_RAW"], equal_nan=True)


def test_degraded_objects_get_rows_and_bits(product_copy, dummy_refset, tmp_path):
    from astropy.table import Table
    with fits.open(product_copy) as hdul:
        gv = hdul["SPEC_GV"].data
        gi = hdul["SPEC_GI"].data
        ids = list(gv["OBJID"][:6])
        n_pix = gv["FLUX"].shape[1]
    edit_product(product_copy, "GV", ids[0], FLUX=np.full(n_pix, np.nan))                 # all-NaN flux in GV
    edit_product(product_copy, "GI", ids[1], ERR=-np.abs(gi["ERR"][1]))                  # negative errors in GI
    wave = gv["WAVELENGTH"][2].copy()
    perm = np.random.default_rng(0).permutation(n_pix)
    edit_product(product_copy, "GV", ids[2], WAVELENGTH=wave[perm], FLUX=gv["FLUX"][2][perm], ERR=gv["ERR"][2][perm])
    edit_product(product_copy, "GV", ids[3], ERR=np.zeros(n_pix))                      # neither band valid:
    edit_product(product_copy, "GI", ids[3], ERR=np.zeros(gi["ERR"].shape[1]))
    # only GV: drop object ids[4] from GI; only GI: drop ids[5] from GV.
    with fits.open(product_copy, mode="update") as hdul:
        for band, oid in (("GI", ids[4]), ("GV", ids[5])):
            data = hdul[f"SPEC_{band}"].data
            hdul[f"SPEC_{band}"].data = data[data["OBJID"] != oid]
    out = tmp_path / "out.fits"
    result = _run(product_copy, out, dummy_refset)
    assert result.status is StageStatus.WARNING
    cat = fits.getdata(out, EXT_REDSHIFT)
    row = {int(o): i for i, o in enumerate(cat["OBJID"])}
    with fits.open(product_copy) as hdul:
        n_union = len(set(hdul["SPEC_GV"].data["OBJID"]) | set(hdul["SPEC_GI"].data["OBJID"]))
    assert len(cat) == n_union
    z = cat["ZWARN"]
    assert z[row[ids[0]]] & int(ZWarn.MISSING_BAND) and z[row[ids[0]]] & int(ZWarn.BAD_INPUT)
    assert z[row[ids[1]]] & int(ZWarn.MISSING_BAND)
    assert np.isfinite(cat["Z"][row[ids[1]]])
    assert z[row[ids[2]]] & int(ZWarn.BAD_INPUT)
    assert cat["NPIX_GV"][row[ids[2]]] > 0.9 * n_pix           # sorted and used, not thrown away
    assert z[row[ids[3]]] & int(ZWarn.NODATA) and np.isnan(cat["Z"][row[ids[3]]])
    assert z[row[ids[4]]] & int(ZWarn.MISSING_BAND) and cat["NPIX_GI"][row[ids[4]]] == 0
    assert z[row[ids[5]]] & int(ZWarn.MISSING_BAND) and cat["NPIX_GV"][row[ids[5]]] == 0


@pytest.mark.parametrize("case", ["not_fits", "no_spec", "no_flux"])
def test_unreadable_input_one_line_error(case, product_copy, dummy_refset, tmp_path, capsys):
    bad = tmp_path / f"{case}.fits"
    if case == "not_fits":
        bad.write_text("this is not a FITS file\n")
    else:
        with fits.open(product_copy) as hdul:
            if case == "no_spec":   # checksum=True: the copied CHECKSUM cards are redone, not left stale
                fits.HDUList([hdul[0].copy(), hdul["TRUTH"].copy()]).writeto(bad, checksum=True)
            else:
                gv = hdul["SPEC_GV"]
                cols = [c for c in gv.columns if c.name != "FLUX"]
                fits.HDUList([hdul[0].copy(), fits.BinTableHDU.from_columns(cols, name="SPEC_GV")]).writeto(
                    bad, checksum=True)
    out = tmp_path / "out.fits"
    code = run_main([str(bad), "-o", str(out), "--reference-dir", str(dummy_refset), "--samples", "4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert not out.exists()
    assert not list(tmp_path.glob(".*tmp"))
    messages = [line for line in err if "error:" in line]
    assert len(messages) == 1 and bad.name in messages[0]
    assert "Traceback" not in "\n".join(err)
    if case == "no_flux":
        assert "FLUX" in messages[0]


def test_corrupted_reference_refused_before_reading(product_copy, dummy_refset, tmp_path, monkeypatch):
    bad_set = tmp_path / "refs"
    shutil.copytree(dummy_refset, bad_set)
    with open(bad_set / "calibration.fits", "r+b") as fh:      # flip one byte
        fh.seek(200)
        byte = fh.read(1)
        fh.seek(200)
        fh.write(bytes([byte[0] ^ 0xFF]))
    import csst_sls_z.products as products

    def forbidden(*a, **k):
        raise AssertionError("a spectrum was read before the reference set was validated")
    monkeypatch.setattr(products, "open_product", forbidden)
    result = RedshiftStage(reference_dir=bad_set).run([product_copy], tmp_path / "out.fits")
    assert result.status is StageStatus.ERROR
    assert "sha256" in result.message and "calibration" in result.message


def test_backbone_once_is_exact(dummy_refset, product_copy):
    from csst_sls_z.network.loader import load_sampler
    from csst_sls_z.products import open_product
    from csst_sls_z.preprocess import preprocess_bands
    from csst_sls_z.reffiles.tables import load_wavegrid
    from csst_sls_z.reffiles.sets import load_reference_set
    refset = load_reference_set(dummy_refset)
    sampler, cfg = load_sampler(refset, n_samples=12, seed=5, batch=8)
    with open_product(product_copy) as reader:
        sl, bands = next(reader.iter_chunks(20))
    x = preprocess_bands(bands, load_wavegrid(refset.path("wavegrid")), sl.stop - sl.start).x
    fast, naive = sampler.predict(x), sampler.predict_naive(x)
    np.testing.assert_allclose(fast.mean, naive.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast.aleatoric, naive.aleatoric, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(fast.epistemic, naive.epistemic, rtol=1e-3, atol=1e-9)
    assert np.all(fast.epistemic > 0)                          # the head really is stochastic


def test_several_inputs_one_output_each_and_bad_file_does_not_stop_batch(product_copy, dummy_refset, tmp_path):
    second = tmp_path / "second.fits"
    shutil.copy(product_copy, second)
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"SIMPLE  =   junk")
    outdir = tmp_path / "out"
    outdir.mkdir()
    result = RedshiftStage(reference_dir=dummy_refset, samples=4).run([product_copy, bad, second], outdir)
    assert result.status is StageStatus.WARNING
    assert sorted(Path(p).name for p in result.outputs) == ["input_slsz.fits", "second_slsz.fits"]
    assert [Path(f).name for f, _ in result.failures] == ["bad.fits"]
    assert result.exit_code == 1


def test_refuses_to_overwrite(product_copy, dummy_refset, tmp_path):
    out = tmp_path / "out.fits"
    out.write_text("precious")
    result = _run(product_copy, out, dummy_refset, samples=4)
    assert result.failures and "exists" in result.failures[0][1]
    assert out.read_text() == "precious"
    result = _run(product_copy, out, dummy_refset, samples=4, overwrite=True)
    assert not result.failures and fits.getdata(out, EXT_REDSHIFT) is not None


def test_catalog_only_and_no_data(product_copy, dummy_refset, tmp_path):
    out = tmp_path / "cat.fits"
    _run(product_copy, out, dummy_refset, samples=4, catalog_only=True)
    with fits.open(out) as hdul:
        assert [h.name for h in hdul][1:] == [EXT_REDSHIFT]
    empty = tmp_path / "empty.fits"
    with fits.open(product_copy) as hdul:
        hdus = [hdul[0].copy()] + [fits.BinTableHDU(hdul[n].data[:0], header=hdul[n].header, name=n)
                                   for n in ("SPEC_GV", "SPEC_GI")]
        fits.HDUList(hdus).writeto(empty, checksum=True)     # the copied CHECKSUM cards are redone
    code = run_main([str(empty), "-o", str(tmp_path / "e.fits"), "--reference-dir", str(dummy_refset)])
    assert code == 3
    assert not (tmp_path / "e.fits").exists()


# ---------------------------------------------------------------- issue 12: the typed spec, ZWARN in one place
def test_spec_checks_parameters():
    assert RedshiftStage().params == {name: p.default for name, p in RedshiftStage.spec.items()}
    for bad, needle in (({"samples": 0}, "samples must be at least 1"), ({"chunk_size": 0}, "chunk_size must be"),
                        ({"seed": -1}, "seed must be at least 0"), ({"samples": "many"}, "samples must be an integer")):
        with pytest.raises(ValueError, match=needle):
            RedshiftStage(**bad)
    with pytest.raises(TypeError, match="unknown stage parameters"):
        RedshiftStage(sample=4)
    assert RedshiftStage(reference_dir="x").params["reference_dir"] == Path("x")


def test_provenance_keywords_are_the_datamodel_names(dummy_refset):
    from csst_sls_z import datamodel as dm
    cards = {k: v for k, v, _ in RedshiftStage(reference_dir=dummy_refset, samples=4,
                                               catalog_only=True).provenance_cards(StageStatus.PERFECT)}
    for key in (dm.KW_VERSION, dm.KW_STAGE, dm.KW_REFSET, dm.KW_REFSET_PEDIGREE, dm.KW_CALIBRATION_METHOD,
                dm.KW_STATUS, dm.KW_DATE_REDUCED, "REFTYP00", "REFNAM00", "REFSHA00", "DEPNAM00", "DEPVER00"):
        assert key in cards, key
    assert cards[dm.param_keyword("samples")] == 4 and cards["P_CATALO"] == 1      # non-defaults only
    assert dm.param_keyword("seed") not in cards and dm.param_keyword("chunk_size") not in cards



def test_bfloat16_backbone_is_recorded_and_close_to_float32(product_copy, dummy_refset, tmp_path, capsys):
    """Issue 17: ``backbone_precision`` is a recorded parameter; bfloat16 changes the numbers
    a little, float32 is the default, and an unknown value is refused in one line."""
    from csst_sls_z import datamodel as dm
    a, b = tmp_path / "f32.fits", tmp_path / "bf16.fits"
    _run(product_copy, a, dummy_refset)
    assert _run(product_copy, b, dummy_refset, backbone_precision="bfloat16").status in (
        StageStatus.PERFECT, StageStatus.WARNING)
    ca, cb = fits.getdata(a, EXT_REDSHIFT), fits.getdata(b, EXT_REDSHIFT)
    ha, hb = fits.getheader(a, EXT_REDSHIFT), fits.getheader(b, EXT_REDSHIFT)
    key = dm.param_keyword("backbone_precision")
    assert key not in ha and hb[key] == "bfloat16"
    ok = np.isfinite(ca["Z_CNN"]) & np.isfinite(cb["Z_CNN"])
    assert ok.sum() > 10 and list(ca["OBJID"]) == list(cb["OBJID"])
    assert not np.array_equal(ca["ZERR_RAW"][ok], cb["ZERR_RAW"][ok])
    assert np.median(np.abs(ca["ZERR_RAW"][ok] - cb["ZERR_RAW"][ok]) / ca["ZERR_RAW"][ok]) < 0.05
    with pytest.raises(ValueError, match="backbone_precision must be one of float32, bfloat16"):
        RedshiftStage(backbone_precision="float16")
    with pytest.raises(SystemExit) as exc:
        run_main([str(product_copy), str(tmp_path / "c.fits"), "--reference-dir", str(dummy_refset),
                  "--backbone-precision", "float16"])
    assert exc.value.code == 1 and "invalid choice: 'float16'" in capsys.readouterr().err
    assert not (tmp_path / "c.fits").exists()

def _thresholds(**kw):
    from csst_sls_z.reffiles.tables import Thresholds
    return Thresholds(low_snr=1.0, large_zerr=0.1, ood_max=5.0, ood_mean=np.zeros(2), ood_precision=np.eye(2),
                      z_min=0.0, z_max=1.6, **kw)


def test_zwarn_rules_read_one_record():
    from csst_sls_z.quality import ZwarnInputs, zwarn_bits
    n = 5
    ones = np.ones(n)
    inputs = ZwarnInputs(npix_gv=np.array([10, 0, 10, 10, 10]), npix_gi=np.array([10, 0, 10, 10, 10]),
                         coverage=np.array([0.9, 0.0, 0.3, 0.9, 0.9]), snr_gi=np.array([5, 0, 5, 5, 5.0]),
                         z=np.array([0.5, np.nan, 0.5, 0.5, 0.5]), z_lo=0.4 * ones, z_hi=0.6 * ones,
                         zerr=0.01 * ones, ood_distance=ones, repaired=np.array([0, 0, 0, 1, 0], bool),
                         duplicate_objid=np.array([0, 0, 0, 0, 1], bool))
    z = zwarn_bits(inputs, _thresholds())
    assert z.dtype == np.int32 and z[0] == 0
    assert z[1] == ZWarn.NODATA | ZWarn.MISSING_BAND | ZWarn.LITTLE_COVERAGE | ZWarn.LOW_SNR
    assert z[2] == ZWarn.LITTLE_COVERAGE and z[3] == ZWarn.BAD_INPUT and z[4] == ZWarn.BAD_INPUT
    assert zwarn_bits(inputs, _thresholds(min_coverage=0.2))[2] == 0        # the threshold is the file's


def test_thresholds_without_min_coverage_load_with_the_schema_default(dummy_refset, tmp_path):
    """Sets written before LITCOVER was stored (schema 1) load with the value then in the code."""
    from csst_sls_z.reffiles.tables import THRESHOLDS_SCHEMA_DEFAULTS, load_thresholds, write_thresholds
    from csst_sls_z.reffiles.header import ReferenceFileError
    path = tmp_path / "thresholds.fits"
    write_thresholds(path, _thresholds(min_coverage=0.3), "DUMMY")
    assert load_thresholds(path).min_coverage == 0.3
    with fits.open(path) as hdul:
        del hdul[0].header["LITCOVER"]
        hdul.writeto(tmp_path / "old.fits", checksum=True)
    assert load_thresholds(tmp_path / "old.fits").min_coverage == THRESHOLDS_SCHEMA_DEFAULTS[1]["LITCOVER"] == 0.5
    with fits.open(path) as hdul:
        del hdul[0].header["LITCOVER"]
        hdul[0].header["SCHEMAV"] = 0                      # a schema that never lacked it: refused
        hdul.writeto(tmp_path / "odd.fits", checksum=True)
    with pytest.raises(ReferenceFileError, match="LITCOVER"):
        load_thresholds(tmp_path / "odd.fits")
