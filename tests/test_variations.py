"""Instrument variations: each option moves what it claims, by the value recorded per object.

Noiseless point sources with a narrow rest-frame line (the helpers of test_simulation.py)
isolate one effect at a time; every test compares against the nominal instrument.
"""
from __future__ import annotations

import numpy as np
import pytest

from csst_sls_z.simulation import SimOptions, simulate_spectra
from csst_sls_z.simulation.simulate import TRAINING_VARIATIONS, tilt_factor

from test_simulation import LINE_REST, centroid, line_sed, make_pop

Z = 0.5            # the 4000 A line lands at 6000 A in GV, 800 A red of the band centre
BAND = "GV"


def line_only(models, options, n=1, r_eff=0.01, sersic_n=1.0, seed=0):
    instrument, sedlib = models
    pop = make_pop(np.full(n, Z), r_eff=r_eff, sersic_n=sersic_n, pa=0.0, axis_ratio=1.0)
    kw = dict(noise=False, amplitude=np.ones(n))
    a = simulate_spectra(pop, instrument, sedlib, np.random.default_rng(seed), options,
                         rest_flux=line_sed(sedlib.wave, n), **kw)
    b = simulate_spectra(pop, instrument, sedlib, np.random.default_rng(seed), options,
                         rest_flux=line_sed(sedlib.wave, n, 0.0), **kw)
    return a, (a.bands[BAND].model.astype(float) - b.bands[BAND].model) * a.bands[BAND].conv


def width2(wave, line, dispersion, half=30):
    """Second moment of a line profile within ``half`` pixels of its peak, pixels^2."""
    k = int(np.argmax(line))
    sel = slice(max(k - half, 0), k + half + 1)
    x = (wave[sel] - centroid(wave, line, k, half)) / dispersion
    w = line[sel]
    return float((w * x * x).sum() / w.sum())


@pytest.mark.parametrize("resolution", [200.0, 300.0])
def test_lsf_width_follows_resolution(models, resolution):
    instrument = models[0]
    band = instrument[BAND]
    sim, line = line_only(models, SimOptions(resolution_range=(resolution, resolution)))
    assert sim.variations["resolution"][0] == resolution
    lam = LINE_REST * (1 + Z)
    sigma = lam / resolution / 2.3548 / band.dispersion
    # The rest-frame line (sigma 2 A) and the pixel add their variances.
    expected = sigma ** 2 + (2.0 * (1 + Z) / band.dispersion) ** 2 + 1 / 12
    assert width2(sim.bands[BAND].wave, line[0], band.dispersion) == pytest.approx(expected, rel=0.05)


def test_psf_added_in_quadrature(models):
    instrument = models[0]
    p = instrument.p
    sim0, inside = line_only(models, SimOptions())
    sim1, added = line_only(models, SimOptions(psf_added_prob=1.0))
    assert sim1.variations["psf_added"][0] == 1 and sim0.variations["psf_added"][0] == 0
    psf2 = (p("PSF_FWHM") / 2.3548 / p("PIXSCALE")) ** 2
    wave, d = sim0.bands[BAND].wave, instrument[BAND].dispersion
    assert width2(wave, added[0], d) - width2(wave, inside[0], d) == pytest.approx(psf2, rel=0.05)


def test_dispersion_scale_moves_the_line_about_the_band_centre(models):
    instrument = models[0]
    band = instrument[BAND]
    s = 1.05
    sim, line = line_only(models, SimOptions(disp_scale_range=(s, s)))
    nominal, line0 = line_only(models, SimOptions())
    assert sim.variations["disp_scale"][0] == s
    wave = sim.bands[BAND].wave
    ref = 0.5 * (band.wmin + band.wmax)
    lam = LINE_REST * (1 + Z)
    expected = ref + (lam - ref) / s               # the nominal wavelength of the pixel the light reaches
    got = centroid(wave, line[0], int(np.argmax(line[0])))
    assert abs(got - expected) < 0.25 * band.dispersion, (got, expected)
    assert abs(got - lam) > 2 * band.dispersion       # and it did move
    # The line's light is conserved (the throughput at the moved pixel differs by < 1%); a
    # continuum pixel spanning s times the Angstroms collects s times the light.
    conv = sim.bands[BAND].conv
    assert (line[0] / conv).sum() / (line0[0] / conv).sum() == pytest.approx(1.0, rel=0.01)
    cont = np.median(sim.bands[BAND].model[0] - line[0] / conv)
    cont0 = np.median(nominal.bands[BAND].model[0] - line0[0] / conv)
    assert cont / cont0 == pytest.approx(s, rel=0.01)


def test_err_scale_flux_tilt_and_sky_scale(models):
    instrument, sedlib = models
    p = instrument.p
    pop = make_pop([0.2, 0.7], r_eff=0.5)
    rest = line_sed(sedlib.wave, 2)
    kw = dict(noise=False, rest_flux=rest, amplitude=np.full(2, 2.0))
    nominal = simulate_spectra(pop, instrument, sedlib, np.random.default_rng(1), SimOptions(), **kw)
    opts = SimOptions(err_scale_range=(1.12, 1.12), flux_tilt_range=(0.08, 0.08), sky_scale_range=(1.2, 1.2))
    varied = simulate_spectra(pop, instrument, sedlib, np.random.default_rng(1), opts, **kw)
    v = varied.variations
    assert np.all(v["err_scale"] == 1.12) and np.all(v["flux_tilt"] == 0.08) and np.all(v["sky_scale"] == 1.2)
    for name in ("GV", "GI"):
        a, b = nominal.bands[name], varied.bands[name]
        tilt = tilt_factor(instrument, a.wave, v["flux_tilt"])
        np.testing.assert_allclose(b.model, a.model * tilt, rtol=1e-5, atol=1e-9)
        sky_e = (instrument[name].sky * 1.2 + p("DARK")) / (instrument[name].sky + p("DARK"))
        np.testing.assert_allclose(b.background / a.background, sky_e, rtol=1e-12)
        # ERR: the true sigma (with the brighter sky), tilted like the flux, scaled by ERR_SCALE.
        true_sigma = np.sqrt(a.model * a.conv + (b.background + b.readvar)[:, None]) / a.conv
        np.testing.assert_allclose(b.err, true_sigma * tilt * 1.12, rtol=2e-5)
    red_end = tilt_factor(instrument, [p("GI_WMAX")], [0.08])[0, 0]
    assert red_end == pytest.approx(1.08)


def test_gaussian_morphology_kernel_has_the_sersic_second_moment(models):
    instrument = models[0]
    d = instrument[BAND].dispersion
    for n in (1.0, 4.0):
        ser, l_ser = line_only(models, SimOptions(), r_eff=1.0, sersic_n=n)
        gau, l_gau = line_only(models, SimOptions(gauss_kernel_prob=1.0), r_eff=1.0, sersic_n=n)
        assert gau.variations["morph_kernel"][0] == 1 and ser.variations["morph_kernel"][0] == 0
        wave = ser.bands[BAND].wave
        w_s, w_g = width2(wave, l_ser[0], d, 90), width2(wave, l_gau[0], d, 90)
        point = width2(wave, line_only(models, SimOptions())[1][0], d, 90)
        assert w_g - point == pytest.approx(w_s - point, rel=0.1), n
        assert l_gau[0].max() != pytest.approx(l_ser[0].max(), rel=1e-3)   # a different shape


def test_nominal_draws_nothing_and_training_preset_spans_its_ranges(models):
    instrument, sedlib = models
    pop = make_pop(np.full(400, 0.5), r_eff=0.3)
    rest = line_sed(sedlib.wave, 400)
    sim = simulate_spectra(pop, instrument, sedlib, np.random.default_rng(2), TRAINING_VARIATIONS,
                           noise=False, rest_flux=rest, amplitude=np.ones(400))
    v = sim.variations
    assert 200 <= v["resolution"].min() < 210 and 290 < v["resolution"].max() <= 300
    assert 0.95 <= v["disp_scale"].min() and v["disp_scale"].max() <= 1.05
    assert 0.85 <= v["err_scale"].min() and v["err_scale"].max() <= 1.15
    assert -0.1 <= v["flux_tilt"].min() and v["flux_tilt"].max() <= 0.1
    assert 0.35 < v["morph_kernel"].mean() < 0.65 and 0.35 < v["psf_added"].mean() < 0.65
    nominal = simulate_spectra(pop, instrument, sedlib, np.random.default_rng(2), SimOptions(),
                               noise=False, rest_flux=rest, amplitude=np.ones(400))
    assert np.all(nominal.variations["resolution"] == instrument["GI"].resolution)
    assert np.all(nominal.variations["err_scale"] == 1.0) and np.all(nominal.variations["morph_kernel"] == 0)


def test_each_band_keeps_its_own_nominal_resolution_without_a_drawn_r(models, monkeypatch):
    """Without resolution_range, GV's LSF follows GV's R even when GI's differs."""
    import dataclasses
    instrument = models[0]
    gv = instrument[BAND]
    _, nominal = line_only(models, SimOptions())
    # Give GI another R: GV's line must not change.
    monkeypatch.setitem(instrument.bands, "GI", dataclasses.replace(instrument["GI"], resolution=150.0))
    _, other = line_only(models, SimOptions())
    wave = gv.wavelength
    assert width2(wave, other[0], gv.dispersion) == pytest.approx(width2(wave, nominal[0], gv.dispersion), rel=1e-6)


def test_training_noise_is_drawn_before_the_tilt(models):
    """BatchMaker: a red tilt scales flux and error alike, so the SNR per pixel is the untilted one."""
    from csst_sls_z.training.data import BatchMaker, from_simulation
    from test_simulation import make_pop
    instrument, sedlib = models
    n = 400
    pop = make_pop(np.full(n, Z), r_eff=0.3, sersic_n=1.0, pa=0.0, axis_ratio=1.0)
    sims = {t: simulate_spectra(pop, instrument, sedlib, np.random.default_rng(1),
                                SimOptions(flux_tilt_range=(t, t), err_scale_range=(1.2, 1.2)),
                                rest_flux=line_sed(sedlib.wave, n), amplitude=np.full(n, 5.0))
            for t in (0.0, 0.3)}
    data = {t: from_simulation(s, instrument) for t, s in sims.items()}
    # The stored model is the untilted one, the tilt kept per object.
    np.testing.assert_allclose(data[0.3].model, data[0.0].model, rtol=1e-5, atol=1e-6)
    assert data[0.3].flux_tilt[0] == pytest.approx(0.3)
    flux0, err0 = BatchMaker(data[0.0], seed=3).noisy(np.arange(n))
    flux1, err1 = BatchMaker(data[0.3], seed=3).noisy(np.arange(n))
    factor = tilt_factor(instrument, np.concatenate([sims[0.3].bands[b].wave for b in ("GV", "GI")]),
                         np.full(n, 0.3))
    # Same noise draw: the tilted batch is the untilted one times the tilt, flux and error alike.
    np.testing.assert_allclose(flux1, flux0 * factor, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(err1, err0 * factor, rtol=1e-5)
    # And the reported error carries err_scale on top of the true sigma.
    red = data[0.0].band_slices[1]
    pull = (flux0[:, red] - data[0.0].model[:, red]) / err0[:, red]
    assert np.std(pull) == pytest.approx(1 / 1.2, rel=0.03)
