"""p(z) per object, its calibration, Z_ALT / P_ALT and MULTIPLE_PEAKS (issue 15, docs/pz.md)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from csst_sls_z import datamodel as dm
from csst_sls_z.calibration import BetaCalibration, ScaleCalibration, TemperatureCalibration
from csst_sls_z.training.calibration_fit import fit_temperature
from csst_sls_z.network.config import CONFIGS
from csst_sls_z.pz import PzGrid, PzMaker, alternative_peaks, gaussian_pz, normalise_rows, rows_float32
from csst_sls_z.quality import ZwarnInputs, zwarn_bits
from csst_sls_z.reffiles.tables import (CalibrationFile, Thresholds, load_calibration, load_thresholds,
                                        write_calibration, write_thresholds)
from csst_sls_z.training.pz_metrics import crps, hpd_coverage, kept_eta_curve, pit_summary, pit_values, stacked_nz

REFSET_0003 = Path(__file__).parents[1] / "reference_files" / "csst_sls_z_0003"
GRID = PzGrid.from_config(CONFIGS["cpu"])           # 400 bins of 0.004 in z, as csst_sls_z_0003
UNCALIBRATED = CalibrationFile(beta=BetaCalibration.identity(), scale=ScaleCalibration.identity(), method="beta")


def _gaussians(grid, centres, sigmas, weights):
    """Rows of a mixture of Gaussians in z, as probabilities per bin (one row per mixture)."""
    z = grid.centres()
    rows = []
    for c, s, w in zip(centres, sigmas, weights):
        d = sum(wi * np.exp(-0.5 * ((z - ci) / si) ** 2) / si for ci, si, wi in zip(c, s, w))
        rows.append(d * np.diff(grid.edges()))
    return normalise_rows(np.array(rows))


def _thresholds(multiple_peaks=None, n_feat=4):
    return Thresholds(low_snr=-1.0, large_zerr=1e9, ood_max=1e9, ood_mean=np.zeros(n_feat),
                      ood_precision=np.eye(n_feat), z_min=0.0, z_max=1.6, min_coverage=0.0,
                      multiple_peaks=multiple_peaks)


def _zwarn_inputs(n, p_alt):
    ones = np.ones(n)
    return ZwarnInputs(npix_gv=ones * 100, npix_gi=ones * 100, coverage=ones, snr_gi=ones * 10,
                       z=ones * 0.8, z_lo=ones * 0.79, z_hi=ones * 0.81, zerr=ones * 0.01,
                       ood_distance=ones, p_alt=p_alt)


# ----------------------------------------------------------------------------- the grid
def test_grid_is_the_network_bins_and_says_so():
    assert (GRID.space, GRID.nbin) == ("z", 400)
    assert GRID.z0 == pytest.approx(0.002) and GRID.dz == pytest.approx(0.004)
    assert GRID.edges()[0] == pytest.approx(0.0) and GRID.edges()[-1] == pytest.approx(1.6)
    ln = PzGrid.from_config(CONFIGS["cpu_ln"])
    assert (ln.space, ln.nbin) == ("ln1pz", 640)
    assert ln.dz == pytest.approx(math.log(2.6) / 640) and ln.z0 == pytest.approx(0.5 * ln.dz)
    assert ln.edges()[0] == pytest.approx(0.0, abs=1e-12) and ln.edges()[-1] == pytest.approx(1.6)
    assert np.all(np.diff(ln.edges()) > 0) and np.diff(ln.edges())[-1] > 2 * np.diff(ln.edges())[0]
    for g in (GRID, ln):
        np.testing.assert_array_equal(g.bin_index(g.centres()), np.arange(g.nbin))
        assert list(g.bin_index([-0.1, 1.7, np.nan])) == [-1, -1, -1]
        cards = {k: v for k, v, _ in g.cards()}
        assert PzGrid.from_header(cards) == g
        assert cards[dm.KW_PZ_SPACE] == g.space and cards[dm.KW_PZ_NBIN] == g.nbin


def test_rows_sum_to_one_in_float32():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 4, (200, GRID.nbin))
    logits[3] = np.nan                                           # an object the network could not measure
    p = TemperatureCalibration(1.0).probabilities(logits)
    p32 = rows_float32(p)
    assert p32.dtype == np.float32
    ok = np.ones(200, bool)
    ok[3] = False
    assert np.all(np.isnan(p32[3]))
    np.testing.assert_allclose(p32[ok].sum(axis=1, dtype=np.float64), 1.0, rtol=0, atol=2e-7)
    np.testing.assert_allclose(p32[ok], p[ok], rtol=0, atol=2e-7)


# ----------------------------------------------------------------------------- Z_ALT, P_ALT, MULTIPLE_PEAKS
def test_two_peaked_softmax_gives_z_alt_p_alt_and_sets_the_bit():
    # [OIII] read as H-alpha: the second solution at (1 + z) * 0.76 - 1, holding 30%.
    z_true = 0.9
    z_conf = (1 + z_true) * 0.76 - 1
    p = _gaussians(GRID, [(z_true, z_conf), (z_true,), (z_true, z_conf)], [(0.01, 0.012), (0.01,), (0.01, 0.012)],
                   [(0.7, 0.3), (1.0,), (0.95, 0.05)])
    logits = np.log(np.maximum(p, 1e-300))
    pz = PzMaker(GRID, True, UNCALIBRATED)(output=logits)
    np.testing.assert_allclose(pz, p, rtol=1e-9, atol=1e-15)
    z_alt, p_alt = alternative_peaks(pz, GRID)
    assert z_alt[0] == pytest.approx(z_conf, abs=GRID.dz)
    assert p_alt[0] == pytest.approx(0.3, abs=0.01)
    assert np.isnan(z_alt[1]) and p_alt[1] == 0.0                # one peak: no second solution
    assert z_alt[2] == pytest.approx(z_conf, abs=GRID.dz) and p_alt[2] == pytest.approx(0.05, abs=0.01)
    # The bit: set above the stored threshold only, never by a thresholds file without it.
    bits = zwarn_bits(_zwarn_inputs(3, p_alt), _thresholds(multiple_peaks=0.2))
    assert list(bits & int(dm.ZWarn.MULTIPLE_PEAKS) != 0) == [True, False, False]
    assert list(bits) == [int(dm.ZWarn.MULTIPLE_PEAKS), 0, 0]
    assert not np.any(zwarn_bits(_zwarn_inputs(3, p_alt), _thresholds(multiple_peaks=None)))
    assert not np.any(zwarn_bits(_zwarn_inputs(3, np.full(3, np.nan)), _thresholds(multiple_peaks=0.0)))


def test_second_peak_on_an_ln1pz_grid_and_noise_is_no_peak():
    grid = PzGrid.from_config(CONFIGS["cpu_ln"])
    p = _gaussians(grid, [(0.4, 1.2)], [(0.01, 0.02)], [(0.55, 0.45)])
    rng = np.random.default_rng(3)
    p = normalise_rows(p * (1 + 0.05 * rng.standard_normal(p.shape)).clip(0.5))   # 5% bin-to-bin noise
    z_alt, p_alt = alternative_peaks(p, grid)
    assert z_alt[0] == pytest.approx(1.2, abs=0.01) and p_alt[0] == pytest.approx(0.45, abs=0.02)
    # The same noise on one peak makes no second solution worth the name.
    one = normalise_rows(_gaussians(grid, [(0.4,)], [(0.01,)], [(1.0,)]) * (1 + 0.05 * rng.standard_normal(p.shape)))
    assert alternative_peaks(one, grid)[1][0] < 1e-3


def test_multiple_peaks_is_a_new_bit_and_the_header_names_it():
    assert dm.ZWarn.MULTIPLE_PEAKS.bit == 8
    assert dm.ZWarn.MULTIPLE_PEAKS.bit not in dm.ZWarn.reserved_downstream()
    assert len({f.bit for f in dm.ZWarn}) == len(dm.ZWarn)
    cards = {k: (v, c) for k, v, c in dm.zwarn_cards()}
    assert cards["ZWBIT08"] == ("MULTIPLE_PEAKS", dm.ZWARN_MEANINGS["MULTIPLE_PEAKS"])
    assert cards["ZWBIT05"][0] == "LARGE_ZERR" and cards["ZWBIT03"][0] == "LOW_SNR"    # 40 = these two


# ----------------------------------------------------------------------------- calibration of p(z)
def _too_narrow(n=3000, s_true=0.02, narrow=2.0, seed=5):
    """Logits of a Gaussian p(z) ``narrow`` times narrower than the scatter of the truths about it."""
    rng = np.random.default_rng(seed)
    z_true = rng.uniform(0.3, 1.3, n)
    mu = z_true + rng.normal(0, s_true, n)
    c = GRID.centres()
    logits = -0.5 * ((c[None, :] - mu[:, None]) / (s_true / narrow)) ** 2
    return logits, z_true


def _row_std(p, grid):
    c = grid.centres()
    m = p @ c
    return np.sqrt(p @ (c * c) - m * m)


def test_temperature_map_is_monotone_and_widens_a_too_narrow_pz():
    logits, z_true = _too_narrow()
    cal = fit_temperature(logits, GRID.bin_index(z_true))
    assert 3.0 < cal.temperature < 5.0                         # width ~ sqrt(T): 2 x too narrow -> T ~ 4
    raw = TemperatureCalibration.IDENTITY.probabilities(logits)
    wide = cal.probabilities(logits)
    ratio = np.median(_row_std(wide, GRID) / _row_std(raw, GRID))
    assert 1.7 < ratio < 2.3
    # Monotone: within every row the calibrated probability increases with the raw one (any T).
    rng = np.random.default_rng(2)
    rough = rng.normal(0, 3, (20, GRID.nbin))
    for t in (0.3, 1.0, cal.temperature):
        m = TemperatureCalibration(t)
        p0 = TemperatureCalibration.IDENTITY.probabilities(rough)
        p1 = m.probabilities(rough)
        for a, b in zip(p0, p1):
            order = np.argsort(a, kind="stable")
            assert np.all(np.diff(b[order]) >= -1e-300)
        np.testing.assert_allclose(m.map_probabilities(p0), p1, rtol=1e-9, atol=1e-300)
    # Calibrated, the PIT is flat; too narrow, it is U-shaped.
    ks_raw = pit_summary(pit_values(raw, GRID, z_true))["ks"]
    ks_cal = pit_summary(pit_values(wide, GRID, z_true))["ks"]
    assert ks_cal < 0.05 < ks_raw
    hpd_raw, hpd_cal = hpd_coverage(raw, GRID, z_true), hpd_coverage(wide, GRID, z_true)
    assert hpd_cal["0.68"] == pytest.approx(0.68, abs=0.04) and hpd_raw["0.68"] < 0.5
    assert np.mean(crps(wide, GRID, z_true)) < np.mean(crps(raw, GRID, z_true))


def _heavy_tailed(n, seed):
    """Logits of Gaussians of width 0.015 about estimates whose errors are 80% N(0, 0.01) and 20%
    N(0, 0.06): no single width (temperature) makes their PIT uniform."""
    rng = np.random.default_rng(seed)
    z_true = rng.uniform(0.3, 1.3, n)
    err = np.where(rng.random(n) < 0.8, rng.normal(0, 0.01, n), rng.normal(0, 0.06, n))
    c = GRID.centres()
    return -0.5 * ((c[None, :] - (z_true + err)[:, None]) / 0.015) ** 2, z_true


def test_pit_map_is_monotone_widens_a_too_narrow_pz_and_fixes_what_temperature_cannot():
    from csst_sls_z.calibration import apply_pit_map
    from csst_sls_z.training.calibration_fit import fit_pit_map
    # Too narrow, T = 1: the PIT map alone widens p(z), rows stay probabilities.
    logits, z_true = _too_narrow()
    raw = TemperatureCalibration.IDENTITY.probabilities(logits)
    knots = fit_pit_map(pit_values(raw, GRID, z_true))
    assert np.all(np.diff(knots) > 0) and knots[0] == 0.0 and knots[-1] == 1.0      # g is monotone
    mapped = TemperatureCalibration(1.0, knots).probabilities(logits)
    assert np.all(mapped >= 0) and np.allclose(mapped.sum(axis=1), 1.0)
    assert np.median(_row_std(mapped, GRID) / _row_std(raw, GRID)) > 1.5
    assert pit_summary(pit_values(mapped, GRID, z_true))["ks"] < 0.03
    np.testing.assert_allclose(apply_pit_map(raw, np.linspace(0, 1, 9)), raw, atol=1e-12)   # identity g
    # Heavy tails: the fitted temperature leaves the PIT off uniform; the map after it, fitted on one
    # sample, makes the PIT of another nearly uniform and the HPD coverage right.
    fit_logits, fit_z = _heavy_tailed(4000, 11)
    test_logits, test_z = _heavy_tailed(4000, 12)
    temp = fit_temperature(fit_logits, GRID.bin_index(fit_z))
    knots = fit_pit_map(pit_values(temp.probabilities(fit_logits), GRID, fit_z))
    both = TemperatureCalibration(temp.temperature, knots)
    assert both.method == "temperature+pit" and temp.method == "temperature"
    ks_t = pit_summary(pit_values(temp.probabilities(test_logits), GRID, test_z))["ks"]
    ks_both = pit_summary(pit_values(both.probabilities(test_logits), GRID, test_z))["ks"]
    assert ks_both < 0.03 < ks_t
    assert hpd_coverage(both.probabilities(test_logits), GRID, test_z)["0.68"] == pytest.approx(0.68, abs=0.04)
    with pytest.raises(ValueError, match="PIT knots"):
        TemperatureCalibration(1.0, [0.0, 0.6, 0.5, 1.0])


def test_a_calibrated_pz_is_left_nearly_alone():
    logits, z_true = _too_narrow(narrow=1.0)
    assert fit_temperature(logits, GRID.bin_index(z_true)).temperature == pytest.approx(1.0, abs=0.15)


def test_gaussian_pz_of_a_logcosh_set():
    maker = PzMaker(GRID, False, UNCALIBRATED)
    assert (maker.kind, maker.calibrated, maker.method, maker.temperature) == ("GAUSSIAN", True, "beta", None)
    p = maker(mean=np.array([0.5, 5.0, np.nan]), sigma=np.array([0.02, 0.01, 0.02]))
    assert p[0].sum() == pytest.approx(1.0) and p[1].sum() == pytest.approx(1.0)
    assert GRID.centres() @ p[0] == pytest.approx(0.5, abs=1e-4)
    assert _row_std(p[:1], GRID)[0] == pytest.approx(math.hypot(0.02, 0.004 / math.sqrt(12)), rel=0.02)
    assert p[1, -1] == 1.0                          # all off the grid: the nearest bin
    assert np.all(np.isnan(p[2]))
    # A width pre-scale of 2 is a Gaussian twice as wide.
    wide = gaussian_pz(GRID, BetaCalibration(1.0, 1.0, 0.0, 2.0), [0.5], [0.02])
    assert _row_std(wide, GRID)[0] == pytest.approx(math.hypot(0.04, 0.004 / math.sqrt(12)), rel=0.02)
    assert {k: v for k, v, _ in maker.cards()}[dm.KW_PZ_KIND] == "GAUSSIAN"


def test_stacked_nz_and_kept_eta_curve():
    logits, z_true = _too_narrow(narrow=1.0)
    p = TemperatureCalibration.IDENTITY.probabilities(logits)
    nz = stacked_nz(p, GRID, z_true)
    assert nz["stacked"].sum() == pytest.approx(1.0) and nz["abs_diff"] < 0.4
    assert stacked_nz(p, GRID, z_true + 0.5)["abs_diff"] > 0.8            # the wrong n(z) is told apart
    z = z_true.copy()
    z[:300] += 0.3                                  # 10% outliers, each with a large score
    curve = kept_eta_curve(np.r_[np.ones(300), np.zeros(z.size - 300)], z, z_true)
    assert curve["at"]["0.6"] == 0.0 and curve["eta"][-1] == pytest.approx(0.1)


def test_multiple_peaks_threshold_is_chosen_on_validation_and_written_with_why(tmp_path):
    from csst_sls_z.training import threshold_choice as tc
    rng = np.random.default_rng(7)
    n = 4000
    zt = rng.uniform(0.1, 1.5, n)
    z = zt + rng.normal(0, 0.005, n) * (1 + zt)
    bad = rng.random(n) < 0.15
    z[bad] = (1 + zt[bad]) * 0.76 - 1                             # [OIII] read as H-alpha
    p_alt = np.where(bad, rng.uniform(0.1, 0.6, n), rng.beta(1, 20, n))
    t, why = tc.choose_multiple_peaks(z, zt, p_alt)
    flagged = p_alt > t
    assert flagged[~bad].mean() <= tc.MULTIPLE_PEAKS_MAX_GOOD and flagged[bad].mean() >= 0.5
    assert why.startswith(f"MULTIPLE_PEAKS {t:.3f}:")
    t_few, why_few = tc.choose_multiple_peaks(zt[:100], zt[:100], p_alt[:100])     # no outliers at all
    assert t_few == tc.MULTIPLE_PEAKS_FALLBACK and "fallback" in why_few
    feats = rng.normal(size=(500, 4))
    th, whys = tc.choose_thresholds(z, np.full(n, 0.01), zt, rng.uniform(0.5, 10, n), rng.normal(size=(n, 4)), feats,
                                    0.0, 1.6, p_alt=p_alt)
    # Chosen together with the clean sample, among the values meeting the flag's own goals.
    flagged = p_alt > th.multiple_peaks
    assert flagged[~bad].mean() <= tc.MULTIPLE_PEAKS_MAX_GOOD and flagged[bad].mean() >= tc.MULTIPLE_PEAKS_MIN_CATCH
    assert whys[0].startswith("LOW_SNR") and "chosen together" in whys[0] and "MULTIPLE_PEAKS" in whys[1]
    assert tc.choose_thresholds(z, np.full(n, 0.01), zt, rng.uniform(0.5, 10, n), rng.normal(size=(n, 4)), feats,
                                0.0, 1.6)[0].multiple_peaks is None
    write_thresholds(tmp_path / "th.fits", th, "DUMMY", history=whys)
    assert load_thresholds(tmp_path / "th.fits").multiple_peaks == th.multiple_peaks
    history = " ".join(str(h) for h in fits.getheader(tmp_path / "th.fits")["HISTORY"])
    assert "MULTIPLE_PEAKS" in history


# ----------------------------------------------------------------------------- reference files
def test_calibration_and_thresholds_files_keep_the_new_numbers(tmp_path):
    beta, scale = BetaCalibration(0.9, 1.1, 0.1, 0.8), ScaleCalibration(1.2)
    write_calibration(tmp_path / "cal.fits", beta, scale, "DUMMY", pz=TemperatureCalibration(1.7))
    write_calibration(tmp_path / "cal_none.fits", beta, scale, "DUMMY")
    assert load_calibration(tmp_path / "cal.fits").pz == TemperatureCalibration(1.7)
    knots = tuple(np.linspace(0, 1, 11) ** 1.3)
    write_calibration(tmp_path / "cal_pit.fits", beta, scale, "DUMMY", pz=TemperatureCalibration(1.7, knots))
    loaded = load_calibration(tmp_path / "cal_pit.fits").pz
    assert loaded.method == "temperature+pit" and np.allclose(loaded.pit_knots, knots, rtol=0, atol=1e-12)
    assert load_calibration(tmp_path / "cal_none.fits").pz is None
    assert load_calibration(REFSET_0003 / "calibration.fits").pz is None        # written before p(z)
    write_thresholds(tmp_path / "th.fits", _thresholds(multiple_peaks=0.25), "DUMMY")
    write_thresholds(tmp_path / "th_none.fits", _thresholds(), "DUMMY")
    assert load_thresholds(tmp_path / "th.fits").multiple_peaks == 0.25
    assert load_thresholds(tmp_path / "th_none.fits").multiple_peaks is None
    assert load_thresholds(REFSET_0003 / "thresholds.fits").multiple_peaks is None   # the bit disabled


# ----------------------------------------------------------------------------- the stage
def _run(inp, out, refdir, **kw):
    from csst_sls_z.stage import RedshiftStage
    return _result(RedshiftStage(reference_dir=refdir, samples=4, seed=1, catalog_only=True, **kw), inp, out)


def _run_shared(stage, inp, out, **params):
    """The session's DUMMY-set stage (conftest ``dummy_stage``, its network built once) with other
    run-time parameters, catalogue only."""
    import copy
    stage = copy.copy(stage)
    stage.params = {**stage.params, "catalog_only": True, **params}
    return _result(stage, inp, out)


def _result(stage, inp, out):
    result = stage.run([inp], out)
    assert result.exit_code == 0, result.message
    with fits.open(out) as hdul:
        return hdul[dm.EXT_REDSHIFT].data.copy(), hdul[dm.EXT_REDSHIFT].header.copy()


def test_stage_writes_pz_rows_that_sum_to_one_with_the_grid_keywords(product_copy, dummy_stage, tmp_path):
    cat, hdr = _run_shared(dummy_stage, product_copy, tmp_path / "out.fits")
    grid = PzGrid.from_config(CONFIGS["smoke"])                   # the DUMMY set's network
    got = PzGrid.from_header(hdr)
    assert (got.space, got.nbin) == (grid.space, grid.nbin)
    assert got.z0 == pytest.approx(grid.z0, rel=1e-12) and got.dz == pytest.approx(grid.dz, rel=1e-12)
    assert cat["PZ"].shape == (len(cat), grid.nbin) and cat["PZ"].dtype.newbyteorder("=") == np.float32
    measured = cat["ZWARN"] & int(dm.ZWarn.NODATA) == 0
    assert measured.any()
    np.testing.assert_allclose(cat["PZ"][measured].sum(axis=1, dtype=np.float64), 1.0, rtol=0, atol=1e-6)
    assert np.all(np.isnan(cat["PZ"][~measured]))
    assert np.all((cat["P_ALT"][measured] >= 0) & (cat["P_ALT"][measured] <= 1))
    # One peak: Z_ALT NaN and P_ALT 0; a second peak: both set.
    np.testing.assert_array_equal(np.isnan(cat["Z_ALT"][measured]), cat["P_ALT"][measured] == 0)
    # The DUMMY set's calibration holds no p(z) calibration: the raw softmax, and the header says so.
    assert hdr[dm.KW_PZ_KIND] == "SOFTMAX" and hdr[dm.KW_PZ_CALIBRATED] is False
    assert hdr[dm.KW_PZ_METHOD] == "none" and dm.KW_PZ_TEMPERATURE not in hdr and hdr[dm.KW_PZ_COLUMN] is True
    for flag in dm.ZWarn:
        assert hdr[dm.indexed_keyword(dm.KW_ZWARN_BIT, flag.bit)] == flag.name
    assert not np.any(cat["ZWARN"] & int(dm.ZWarn.MULTIPLE_PEAKS))   # its thresholds file has no MPEAKPAL


def test_no_pz_output_equals_the_default_output_minus_the_column(product_copy, dummy_stage, tmp_path):
    full, hfull = _run_shared(dummy_stage, product_copy, tmp_path / "full.fits")
    bare, hbare = _run_shared(dummy_stage, product_copy, tmp_path / "bare.fits", no_pz=True)
    assert list(bare.names) == [n for n in full.names if n != "PZ"] == [c.name for c in dm.REDSHIFT_COLUMNS]
    for name in bare.names:
        np.testing.assert_array_equal(bare[name], full[name], err_msg=name)
    assert hbare[dm.KW_PZ_COLUMN] is False and hbare[dm.param_keyword("no_pz")] == 1
    skip = {"DATE-RED", "CHECKSUM", "DATASUM", "NAXIS1", "TFIELDS", dm.KW_PZ_COLUMN, dm.param_keyword("no_pz")}
    nth = len(bare.names) + 1
    skip |= {f"{k}{nth}" for k in ("TTYPE", "TFORM", "TUNIT", "TDIM")}
    assert {k: v for k, v in hbare.items() if k not in skip} == {k: v for k, v in hfull.items() if k not in skip}


def test_an_old_set_without_pz_calibration_runs_and_a_temperature_is_applied(product_copy, dummy_refset, tmp_path):
    # csst_sls_z_0003's calibration file was written before p(z): no PZMETH.
    old_cal = REFSET_0003 / "calibration.fits"
    assert "PZMETH" not in fits.getheader(old_cal)
    cat, hdr = _run(product_copy, tmp_path / "old.fits", dummy_refset, reference_overrides={"calibration": old_cal})
    assert hdr[dm.KW_PZ_CALIBRATED] is False and hdr[dm.KW_PZ_METHOD] == "none"
    measured = cat["ZWARN"] & int(dm.ZWarn.NODATA) == 0
    # A calibration file with a temperature: applied, and the header says so.
    cal = load_calibration(old_cal)
    hot = tmp_path / "calibration_t.fits"
    write_calibration(hot, cal.beta, cal.scale, "DUMMY", pz=TemperatureCalibration(3.0))
    warm, hwarm = _run(product_copy, tmp_path / "warm.fits", dummy_refset, reference_overrides={"calibration": hot})
    assert hwarm[dm.KW_PZ_CALIBRATED] is True and hwarm[dm.KW_PZ_METHOD] == "temperature"
    assert hwarm[dm.KW_PZ_TEMPERATURE] == 3.0
    p0, p1 = cat["PZ"][measured].astype(float), warm["PZ"][measured].astype(float)
    # softmax(l / 3) = p^(1/3) renormalised: flatter.
    np.testing.assert_allclose(p1, TemperatureCalibration(3.0).map_probabilities(p0), rtol=1e-3, atol=1e-6)
    entropy = [-np.sum(p * np.log(np.maximum(p, 1e-30)), axis=1).mean() for p in (p0, p1)]
    assert entropy[1] > entropy[0]
    np.testing.assert_array_equal(cat["Z"], warm["Z"])           # the point estimate is not touched


def test_the_bit_follows_p_alt_through_the_stage(product_copy, dummy_refset, tmp_path):
    th = load_thresholds(Path(dummy_refset) / "thresholds.fits")
    path = tmp_path / "thresholds_mp.fits"
    write_thresholds(path, th.replace(multiple_peaks=0.05), "DUMMY")
    cat, _ = _run(product_copy, tmp_path / "mp.fits", dummy_refset, reference_overrides={"thresholds": path})
    flagged = cat["ZWARN"] & int(dm.ZWarn.MULTIPLE_PEAKS) != 0
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(flagged, cat["P_ALT"] > 0.05)


def test_a_logcosh_set_writes_the_calibrated_gaussian_and_says_so(product_copy, tmp_path, monkeypatch):
    from dataclasses import replace
    from csst_sls_z.training.dummy import write_dummy_set
    monkeypatch.setitem(CONFIGS, "smoke_logcosh", replace(CONFIGS["smoke"], name="smoke_logcosh", objective="logcosh"))
    refdir = write_dummy_set(tmp_path / "logcosh_set", network="smoke_logcosh")
    cat, hdr = _run(product_copy, tmp_path / "logcosh.fits", refdir)
    assert hdr[dm.KW_PZ_KIND] == "GAUSSIAN" and hdr[dm.KW_PZ_CALIBRATED] is True
    assert hdr[dm.KW_PZ_METHOD] == hdr[dm.KW_CALIBRATION_METHOD] == "beta"
    assert hdr[dm.KW_PZ_NBIN] == CONFIGS["smoke"].n_bins
    measured = cat["ZWARN"] & int(dm.ZWarn.NODATA) == 0
    np.testing.assert_allclose(cat["PZ"][measured].sum(axis=1, dtype=np.float64), 1.0, rtol=0, atol=1e-6)
    assert np.all(np.isnan(cat["Z_ALT"][measured])) and np.all(cat["P_ALT"][measured] == 0)    # one peak


def test_peak_recall_is_the_truth_inside_a_refinement_window():
    from csst_sls_z.reffiles.refinement import load_refinement
    from csst_sls_z.training.pz_metrics import peak_recall
    model = load_refinement(Path(__file__).resolve().parents[1] / "reference_files" / "csst_sls_z_0007" / "refinement.fits")
    grid = PzGrid.from_config(CONFIGS["cpu_ln"])
    s = grid.coordinates()

    def bump(z, height=1.0, width=0.004):
        return height * np.exp(-0.5 * ((s - np.log1p(z)) / width) ** 2)
    one = bump(0.5)
    two = bump(0.5) + bump(1.2, 0.6)
    pz = np.stack([one, one, two, two, np.full_like(one, np.nan)])
    pz[:4] /= pz[:4].sum(axis=1, keepdims=True)
    z_anchor = np.array([0.5, 0.5, 0.5, 0.5, 0.5])
    # inside a window around Z; far from every peak; at the second peak; half a window past Z; no p(z)
    off = math.expm1(math.log1p(0.5) + 0.5 * model.window_half)
    z_true = np.array([0.5, 1.2, 1.2, off, 0.5])
    held = peak_recall(pz, grid, z_anchor, z_true, model)
    assert held.tolist() == [True, False, True, True, False]
    far = math.expm1(math.log1p(0.5) + 1.5 * model.window_half)
    assert not peak_recall(pz[:1], grid, z_anchor[:1], np.array([far]), model)[0]
