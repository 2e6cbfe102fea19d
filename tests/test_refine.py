"""The template refinement after the network (csst_sls_z.refine) and its reference file."""
from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits

from csst_sls_z import refine as R
from csst_sls_z.products.reader import BandData, open_product
from csst_sls_z.pz import PzGrid
from csst_sls_z.reffiles.header import ReferenceFileError
from csst_sls_z.reffiles.refinement import load_refinement, write_refinement

GRID = PzGrid(z0=0.000746493316427684, dz=0.001492986632855369, nbin=640, space="ln1pz")   # cpu_ln's bins


@pytest.fixture(scope="module")
def model(models):
    from csst_sls_z.training.refine_basis import build_refinement_model
    instrument, sedlib = models
    return build_refinement_model(sedlib, instrument)


def gaussian_pz(centre_s, sigma=0.005, grid=GRID):
    x = grid.coordinates()
    p = np.exp(-0.5 * ((x[None, :] - np.atleast_1d(centre_s)[:, None]) / sigma) ** 2)
    return p / p.sum(axis=1, keepdims=True)


def basis_spectra(model, instrument, s_true, width, noise, seed=0):
    """Spectra that are exactly a combination of the model's broadened basis at ln(1+z) = s_true:
    ERR = noise x the mean |flux| (noise 0: ERR as for 1e-4, no noise added)."""
    rng = np.random.default_rng(seed)
    n = len(s_true)
    coef = rng.normal(size=(n, model.n_vectors))
    coef[:, 0] = 3 + 3 * np.abs(coef[:, 0])
    lnr = model.rest_loglam()
    bands = {}
    for b, name in enumerate(R.BANDS):
        wave = instrument[name].wavelength
        flux, err = [], []
        for k in range(n):
            tmpl = model.templates[b, width[k]]
            t = np.array([np.interp(np.log(wave) - s_true[k], lnr, tmpl[:, i]) for i in range(model.n_vectors)])
            f = coef[k] @ t
            e = np.full(wave.size, max(noise, 1e-4) * np.abs(f).mean())
            flux.append(f + (rng.normal(size=wave.size) * e if noise > 0 else 0.0))
            err.append(e)
        bands[name] = BandData(np.tile(wave, n), np.concatenate(flux), np.concatenate(err),
                               np.arange(n + 1, dtype=np.int64) * wave.size, np.ones(n, dtype=bool))
    return bands


# ----------------------------------------------------------------------------- recovery
def test_noiseless_basis_spectra_are_recovered(model, models):
    instrument, _ = models
    s_true = np.array([0.12, 0.35, 0.51, 0.77])
    width = np.array([0, 2, 3, 4])
    bands = basis_spectra(model, instrument, s_true, width, noise=0.0)
    # p(z) peaked 0.003 away, the network's Z 0.006 away: both inside the window.
    res = R.refine(bands, gaussian_pz(s_true + 0.003), GRID, np.expm1(s_true + 0.006), model, threads=1)
    assert np.all(res.status == R.STATUS_OK)
    assert np.max(np.abs(np.log1p(res.z) - s_true)) < 1e-4
    np.testing.assert_array_equal(res.width, width)          # the self-broadening is profiled
    # ERR is 1e-4 of the flux: (flux/err)^2 ~ 1e8 a pixel; what is left is the 1e-8 ridge's bias
    assert np.all(res.chi2 < 100 * res.npix)
    assert np.all(res.npix == instrument["GV"].wavelength.size + instrument["GI"].wavelength.size)


def test_noisy_basis_spectra_are_recovered_within_their_noise(model, models):
    instrument, _ = models
    s_true = np.array([0.2, 0.45, 0.6, 0.85])
    width = np.array([1, 2, 2, 3])
    bands = basis_spectra(model, instrument, s_true, width, noise=0.05, seed=1)
    res = R.refine(bands, gaussian_pz(s_true - 0.004), GRID, np.expm1(s_true - 0.007), model)
    assert np.all(res.status == R.STATUS_OK)
    assert np.max(np.abs(np.log1p(res.z) - s_true)) < 1.5e-3
    # chi2 per pixel near 1 for a model that is right
    assert np.all(np.abs(res.chi2 / res.npix - 1) < 0.2)


def test_grid_in_z_and_one_band_only(model, models):
    """A p(z) on bins equal in z (older sets) works the same; an object with one band is refined on it."""
    instrument, _ = models
    s_true = np.array([0.25, 0.6, 0.7])
    bands = basis_spectra(model, instrument, s_true, np.array([2, 1, 3]), noise=0.0)
    zgrid = PzGrid(z0=0.002, dz=0.004, nbin=400, space="z")
    zc = zgrid.coordinates()
    pz = np.exp(-0.5 * ((zc[None, :] - np.expm1(s_true + 0.003)[:, None]) / 0.01) ** 2)
    gv = bands["GV"]                               # object 2 without GV
    n_gv = instrument["GV"].wavelength.size
    gv.present[2] = False
    gv.offsets[3] -= n_gv
    gv.wave, gv.flux, gv.err = gv.wave[:2 * n_gv], gv.flux[:2 * n_gv], gv.err[:2 * n_gv]
    res = R.refine(bands, pz, zgrid, np.expm1(s_true - 0.005), model, threads=1)
    assert np.all(res.status == R.STATUS_OK)
    assert np.max(np.abs(np.log1p(res.z) - s_true)) < 1e-4
    assert res.npix[2] == instrument["GI"].wavelength.size
    iv = R.intervals(res)
    # noiseless: the 68% interval collapses onto Z
    assert np.all(np.abs(iv["Z_LO"] - res.z) < 1e-5) and np.all(np.abs(iv["Z_HI"] - res.z) < 1e-5)
    # the windows' network mass, bins equal in z: about the Gaussian's mass within +-0.01 in ln(1+z)
    assert np.all((res.posterior.win_mass[:, 0] > 0.5) & (res.posterior.win_mass[:, 0] < 1.0))


def test_simulated_product_refined_z_is_closer_than_the_start(model, sim_product):
    with open_product(sim_product) as reader:
        (sl, bands), = list(reader.iter_chunks(1000))
    truth = fits.getdata(sim_product, "TRUTH")
    z_true = np.asarray(truth["Z_TRUE"], float)
    snr = np.asarray(truth["SNR_GI"], float)
    s_true = np.log1p(z_true)
    rng = np.random.default_rng(5)
    offset = rng.choice([-1.0, 1.0], z_true.size) * rng.uniform(0.004, 0.008, z_true.size)
    # p(z) peaked near the truth; the network's Z wrong by 0.004-0.008 in ln(1+z), inside the window
    res = R.refine(bands, gaussian_pz(s_true + 0.3 * offset, sigma=0.006), GRID, np.expm1(s_true + offset), model)
    assert np.all(res.status != R.STATUS_NOT_RUN)
    before = np.abs(offset)
    after = np.abs(np.log1p(res.z) - s_true)
    good = snr >= 2
    assert good.sum() >= 10
    assert np.median(after[good]) < 0.5 * np.median(before[good])
    assert np.mean(after[good] < before[good]) >= 0.8
    assert np.median(after) < np.median(before)


def test_threads_do_not_change_the_result(model, sim_product):
    with open_product(sim_product) as reader:
        (sl, bands), = list(reader.iter_chunks(1000))
    z_true = np.asarray(fits.getdata(sim_product, "TRUTH")["Z_TRUE"], float)
    pz = gaussian_pz(np.log1p(z_true) + 0.002)
    one = R.refine(bands, pz, GRID, z_true, model, threads=1)
    two = R.refine(bands, pz, GRID, z_true, model, threads=3)
    for name in ("z", "status", "chi2", "npix", "width", "evaluations"):
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name), err_msg=name)
    np.testing.assert_array_equal(one.posterior.obj, two.posterior.obj)


# ----------------------------------------------------------------------------- status
def test_object_without_usable_pixels_or_pz_is_not_run(model, models):
    instrument, _ = models
    s_true = np.array([0.3, 0.4, 0.5, 0.6])
    bands = basis_spectra(model, instrument, s_true, np.array([2, 2, 2, 2]), noise=0.02)
    gv, gi = bands["GV"], bands["GI"]
    n_gv = instrument["GV"].wavelength.size
    n_gi = instrument["GI"].wavelength.size
    gv.err[0:n_gv] = np.nan                  # object 0: every pixel bad in GV ...
    gi.present[0] = False                    # ... and no GI row
    gi.offsets[1:] -= n_gi                   # (a missing row has an empty slice)
    gi.wave, gi.flux, gi.err = gi.wave[n_gi:], gi.flux[n_gi:], gi.err[n_gi:]
    pz = gaussian_pz(s_true)
    pz[1] = np.nan                           # object 1: no p(z)
    z_net = np.expm1(s_true)
    z_net[2] = np.nan                        # object 2: no Z
    res = R.refine(bands, pz, GRID, z_net, model)
    np.testing.assert_array_equal(res.status, [1, 1, 1, 0])
    assert np.all(np.isnan(res.z[:3])) and np.isfinite(res.z[3])
    assert res.npix[0] == 0 and res.npix[1] > 0
    assert np.all(res.width[:3] == -1) and np.all(np.isnan(res.chi2[:3]))
    iv = R.intervals(res)
    assert np.isfinite(iv["Z_LO"][0]) and np.isfinite(iv["ZERR"][2])     # from the network's p(z) alone
    assert np.isnan(iv["ZERR"][1])           # no p(z): no interval


def test_minimum_outside_the_window_is_flagged_on_its_edge(model, models):
    instrument, _ = models
    s_true = np.array([0.4, 0.55])
    bands = basis_spectra(model, instrument, s_true, np.array([2, 2]), noise=0.0)
    centre = s_true + np.array([0.016, -0.016])          # the truth 0.006 outside +-0.01
    res = R.refine(bands, gaussian_pz(centre, sigma=0.002), GRID, np.expm1(centre), model, threads=1)
    np.testing.assert_array_equal(res.status, [R.STATUS_WINDOW_EDGE] * 2)
    edge = centre + np.array([-1, 1]) * model.window_half
    assert np.all(np.abs(np.log1p(res.z) - edge) <= model.fine_step + 1e-9)
    # the same objects with the window on the truth are fine
    ok = R.refine(bands, gaussian_pz(s_true, sigma=0.002), GRID, np.expm1(s_true), model, threads=1)
    np.testing.assert_array_equal(ok.status, [R.STATUS_OK] * 2)


def test_pixel_rule_and_the_prior(model, models):
    """Pixels with ERR >= 20x the object's median ERR are not used; where the spectrum says nothing the
    objective follows the network's p(z)."""
    instrument, _ = models
    s_true = np.array([0.4, 0.4, 0.4])
    bands = basis_spectra(model, instrument, s_true, np.array([2, 2, 2]), noise=0.05, seed=4)
    gv = bands["GV"]
    n_gv = instrument["GV"].wavelength.size
    n_all = n_gv + instrument["GI"].wavelength.size
    gi = bands["GI"]
    med = np.median(np.concatenate([gv.err[:n_gv], gi.err[:gi.offsets[1]]]))     # over both bands
    gv.err[10:17] = 25 * med                 # 7 pixels noisier than 20x the median: dropped
    gv.err[20:23] = 15 * med                 # 3 pixels under 20x: kept
    gv.flux[10:17] = 1e6                     # (and their absurd values cannot matter)
    # objects 1 and 2: pure noise (the flux says nothing); the p(z) peak at 0.41 decides
    for band in bands.values():
        for k in (1, 2):
            a, b = band.offsets[k], band.offsets[k + 1]
            band.flux[a:b] = np.random.default_rng(k).normal(size=b - a) * band.err[a:b]
    pz = gaussian_pz(np.array([0.4, 0.41, 0.41]), sigma=0.0008)
    res = R.refine(bands, pz, GRID, np.expm1([0.4, 0.405, 0.405]), model, threads=1)
    assert res.npix[0] == n_all - 7 and res.npix[1] == n_all
    assert abs(np.log1p(res.z[0]) - 0.4) < 1.5e-3
    assert np.all(np.abs(np.log1p(res.z[1:]) - 0.41) < 2e-3)
    # without the prior the noise decides: somewhere else in the window
    flat = R.refine(bands, pz, GRID, np.expm1([0.4, 0.405, 0.405]), model.replace(prior_weight=0.0), threads=1)
    assert np.max(np.abs(np.log1p(flat.z[1:]) - 0.41)) > 2e-3


# ----------------------------------------------------------------------------- windows and peaks
def test_peak_finder_follows_its_rules(model):
    p = np.zeros(GRID.nbin)
    p[100] = 0.40            # the highest peak
    p[300] = 0.25
    p[307] = 0.20            # within 8 bins of 300 and less probable: dropped
    p[450] = 0.015           # below 0.02: dropped
    p[520] = 0.06
    p[600] = 0.04            # a 4th kept peak: over n_peaks = 3
    p[60] = 0.05 - 1e-12
    got = R.find_peaks(p, model)
    # ranked by the probability within +-5 bins
    np.testing.assert_array_equal(got, [100, 300, 520])
    assert R.find_peaks(p, model.replace(n_peaks=5)).tolist() == [100, 300, 520, 60, 600]
    assert R.find_peaks(p, model.replace(peak_min_sep=3)).tolist() == [100, 300, 307]
    # the probability within +-5 bins: a neighbour 5 bins away counts, one 6 bins away does not
    q = np.zeros(GRID.nbin)
    q[[200, 205, 300]] = [0.2, 0.2, 0.35]
    assert R.find_peaks(q, model).tolist()[0] == 200       # 0.4 within +-5 of 200 beats 0.35
    q[[205, 206]] = [0.0, 0.2]
    assert R.find_peaks(q, model).tolist()[0] == 300
    # more than min_sep bins apart is kept: 9 bins is, 8 is not
    q = np.zeros(GRID.nbin)
    q[[200, 209]] = [0.5, 0.3]
    assert R.find_peaks(q, model).tolist() == [200, 209]
    q = np.zeros(GRID.nbin)
    q[[200, 208]] = [0.5, 0.3]
    assert R.find_peaks(q, model).tolist() == [200]
    # smoothed over 3 bins: a flat top is one peak at its middle (the lower of two middle bins)
    q = np.zeros(GRID.nbin)
    q[[200, 201, 202, 203]] = 0.25
    assert R.find_peaks(q, model).tolist() == [201]


def test_windows_around_z_and_peaks_merge(model, models):
    instrument, _ = models
    s_true = np.array([0.5, 0.5])
    bands = basis_spectra(model, instrument, s_true, np.array([2, 2]), noise=0.05, seed=2)
    x = GRID.coordinates()
    pz = np.zeros((2, GRID.nbin))
    # object 0: peaks at 0.5 and 0.2, Z at 0.505 (merged with the 0.5 window): two windows
    pz[0, np.argmin(abs(x - 0.5))] = 0.7
    pz[0, np.argmin(abs(x - 0.2))] = 0.3
    # object 1: one peak at 0.5, Z at 0.7: two windows, the second only Z's
    pz[1, np.argmin(abs(x - 0.5))] = 1.0
    res = R.refine(bands, pz, GRID, np.expm1([0.505, 0.7]), model, threads=1)
    post = res.posterior
    np.testing.assert_array_equal(post.n_windows, [2, 2])
    h = model.window_half
    c0 = x[np.argmin(abs(x - 0.2))]
    c1 = x[np.argmin(abs(x - 0.5))]
    np.testing.assert_allclose(post.win_lo[0, :2], [c0 - h, c1 - h], atol=1e-12)
    np.testing.assert_allclose(post.win_hi[0, :2], [c0 + h, 0.505 + h], atol=1e-12)
    np.testing.assert_allclose(post.win_lo[1, :2], [c1 - h, 0.7 - h], atol=1e-12)
    # each window's network mass: the bins' probability inside it
    np.testing.assert_allclose(post.win_mass[0, :2], [0.3, 0.7], atol=1e-9)
    np.testing.assert_allclose(post.win_mass[1, :2], [1.0, 0.0], atol=1e-9)
    # scanned points lie inside their windows, sorted
    for o in range(2):
        n = post.n_points[o]
        s, w = post.s[o, :n], post.window[o, :n]
        for k in range(post.n_windows[o]):
            sk = s[w == k]
            assert sk.size >= 3 and np.all(np.diff(sk) > 0)
            assert sk.min() >= post.win_lo[o, k] - 1e-6 and sk.max() <= post.win_hi[o, k] + 1e-6


# ----------------------------------------------------------------------------- intervals
def test_intervals_widen_with_temperature_and_fit_one(model, sim_product):
    from csst_sls_z.training.refine_calibration import coverage, fit_temperature
    with open_product(sim_product) as reader:
        (sl, bands), = list(reader.iter_chunks(1000))
    z_true = np.asarray(fits.getdata(sim_product, "TRUTH")["Z_TRUE"], float)
    s_true = np.log1p(z_true)
    res = R.refine(bands, gaussian_pz(s_true + 0.002, sigma=0.008), GRID, np.expm1(s_true + 0.002), model)
    cold, warm = R.intervals(res, 0.5), R.intervals(res, 20.0)
    ok = res.status != R.STATUS_NOT_RUN
    # not every object (a shape with two minima can be wider at a middle T than flat), but nearly all,
    # and the median at every step
    assert np.mean(warm["ZERR"][ok] > 1.2 * cold["ZERR"][ok]) > 0.8
    medians = [np.median(R.intervals(res, t)["ZERR"][ok]) for t in (0.25, 0.5, 1.0, 2.0, 5.0, 20.0)]
    assert np.all(np.diff(medians) > 0), medians
    for iv in (cold, warm):
        assert np.all(iv["Z_LO95"][ok] <= iv["Z_LO"][ok]) and np.all(iv["Z_LO"][ok] <= iv["Z_HI"][ok])
        assert np.all(iv["Z_HI"][ok] <= iv["Z_HI95"][ok])
        np.testing.assert_allclose(iv["ZERR"], 0.5 * (iv["Z_HI"] - iv["Z_LO"]))
    # the default temperature is the model's
    np.testing.assert_array_equal(R.intervals(res)["ZERR"], R.intervals(res, model.temperature)["ZERR"])
    t = fit_temperature(res, z_true)
    assert 1e-2 < t < 1e4
    assert abs(coverage(res, z_true, t) - 0.68) <= 2.0 / ok.sum() + 1e-9


def test_intervals_of_a_known_posterior():
    """A single window holding all the probability, a parabolic objective: the 68% interval is +-sigma."""
    grid = PzGrid(z0=0.0005, dz=0.001, nbin=1000, space="ln1pz")
    s = np.linspace(0.29, 0.31, 401)
    sigma = 0.001
    obj = ((s - 0.3) / sigma) ** 2
    pz = np.zeros((1, grid.nbin))
    pz[0, 280:320] = 1 / 40
    post = R.Posterior(grid, pz, s[None, :], obj[None, :].astype(np.float32),
                       np.zeros((1, s.size), np.int8), np.array([s.size], np.int32), np.array([[0.279]]),
                       np.array([[0.321]]), np.array([[1.0]]), np.array([1], np.int8))
    for t in (1.0, 4.0):
        iv = R.intervals(post, t)
        width = sigma * math.sqrt(t)
        np.testing.assert_allclose(np.log1p(iv["Z_HI"]) - 0.3, 0.9945 * width, rtol=0.02)
        np.testing.assert_allclose(0.3 - np.log1p(iv["Z_LO"]), 0.9945 * width, rtol=0.02)
        np.testing.assert_allclose(np.log1p(iv["Z_HI95"]) - 0.3, 1.96 * width, rtol=0.02)


def test_temperature_by_gi_snr_per_object(model, sim_product):
    """A model with temperatures by GI SNR gives each posterior the temperature of its SNR bin; the
    intervals then equal those at that bin's temperature, object by object."""
    from csst_sls_z.training.refine_calibration import fit_temperature, fit_temperatures_by_snr
    binned = model.replace(temperature=2.0, temperature_snr_edges=(1.5, 3.0), temperatures_by_snr=(0.5, 2.0, 8.0))
    snr = np.array([0.2, 1.5, 2.9, 3.0, 40.0, np.nan])
    np.testing.assert_array_equal(binned.temperature_for(snr), [0.5, 2.0, 2.0, 8.0, 8.0, 2.0])
    assert model.temperature_for(snr) == model.temperature and binned.temperature_for(None) == 2.0
    with pytest.raises(ValueError, match="one more value"):
        model.replace(temperature_snr_edges=(1.5, 3.0), temperatures_by_snr=(1.0, 2.0))
    with pytest.raises(ValueError, match="increasing"):
        model.replace(temperature_snr_edges=(3.0, 1.5), temperatures_by_snr=(1.0, 2.0, 3.0))

    with open_product(sim_product) as reader:
        (sl, bands), = list(reader.iter_chunks(1000))
    z_true = np.asarray(fits.getdata(sim_product, "TRUTH")["Z_TRUE"], float)
    s_true = np.log1p(z_true)
    n = z_true.size
    snr_gi = np.linspace(0.5, 6.0, n)
    res = R.refine(bands, gaussian_pz(s_true + 0.002, sigma=0.008), GRID, np.expm1(s_true + 0.002), binned,
                   snr_gi=snr_gi)
    temps = binned.temperature_for(snr_gi)
    np.testing.assert_array_equal(res.posterior.temperature, temps)
    got = R.intervals(res)["ZERR"]
    for t in (0.5, 2.0, 8.0):
        rows = temps == t
        np.testing.assert_array_equal(got[rows], R.intervals(res, t)["ZERR"][rows])
    # subsets and concatenation keep each object's temperature
    half = n // 2
    joined = R.concatenate([res.subset(np.arange(half)), res.subset(np.arange(half, n))])
    np.testing.assert_array_equal(R.intervals(joined)["ZERR"], got)
    with pytest.raises(ValueError, match="snr_gi"):
        R.refine(bands, gaussian_pz(s_true), GRID, np.expm1(s_true), binned, snr_gi=snr_gi[:-1])

    # the fit: one temperature per bin with enough objects; a thin bin is fitted with its neighbour
    fit = fit_temperatures_by_snr(res, z_true, snr_gi, edges=(3.0, 50.0), min_objects=5)
    assert fit["edges"] == (3.0, 50.0) and len(fit["temperatures"]) == 3 and fit["n"][2] == 0
    assert fit["temperatures"][2] == fit["temperatures"][1]
    merged = fit_temperatures_by_snr(res, z_true, snr_gi, edges=(3.0, 50.0), min_objects=fit["n"][1] + 1)
    both = np.nonzero(res.status != R.STATUS_NOT_RUN)[0]
    assert merged["temperatures"][1] == merged["temperatures"][2] == fit_temperature(res.subset(both), z_true[both])
    from csst_sls_z.training.refine_calibration import coverage
    low = np.nonzero((snr_gi < 3.0) & (res.status != R.STATUS_NOT_RUN))[0]
    assert abs(coverage(res, z_true, fit["temperatures"][0], rows=low) - 0.68) <= 2.0 / low.size + 1e-9


# ----------------------------------------------------------------------------- the reference file
def test_reference_file_round_trips(model, tmp_path):
    path = write_refinement(tmp_path / "refinement.fits", model.replace(temperature=1.7), "SIMULATION",
                            history=["test"])
    back = load_refinement(path)
    np.testing.assert_array_equal(back.basis, model.basis)
    np.testing.assert_array_equal(back.loglam, model.loglam)
    for name in ("loglam0", "dloglam", "libraries", "basis_r", "bands", "resolution", "dispersion", "centre",
                 "widths", "coarse_width", "window_half", "coarse_step", "coarse_bin", "fine_step", "fine_half",
                 "parabola_steps", "n_minima", "minimum_margin", "profile_minima", "profile_rounds", "prior_weight",
                 "pz_floor", "peak_smooth",
                 "peak_mass_half", "peak_min_prob", "peak_min_sep", "n_peaks", "max_rel_err", "ridge"):
        assert getattr(back, name) == getattr(model, name), name
    assert back.temperature == 1.7
    assert back.temperature_snr_edges == () and back.temperatures_by_snr == ()
    assert "TSNRN" not in fits.getheader(path)        # one temperature: the file as before the bins
    binned = write_refinement(tmp_path / "binned.fits", model.replace(
        temperature=1.7, temperature_snr_edges=(1.5, 3.0, 5.0), temperatures_by_snr=(0.4, 1.1, 2.5, 6.0)), "SIMULATION")
    back = load_refinement(binned)
    assert back.temperature_snr_edges == (1.5, 3.0, 5.0) and back.temperatures_by_snr == (0.4, 1.1, 2.5, 6.0)
    hdr = fits.getheader(path)
    assert hdr["REFTYPE"] == "refinement" and hdr["LIB01"] == "REDROCK2016" and hdr["LIB02"] == "KCORRECT"
    assert "test" in str(hdr["HISTORY"])
    with pytest.raises(FileExistsError):
        write_refinement(path, model, "SIMULATION")


def _one_sentence(msg: str) -> bool:
    return "\n" not in msg and ". " not in msg.rstrip(".")


def test_corrupt_or_invalid_reference_file_is_refused(model, tmp_path):
    good = write_refinement(tmp_path / "good.fits", model, "SIMULATION")
    # a flipped byte in the basis: the checksum fails
    raw = bytearray(good.read_bytes())
    data_start = len(raw) // 2
    raw[data_start] ^= 0xFF
    (tmp_path / "corrupt.fits").write_bytes(bytes(raw))
    with pytest.raises(ReferenceFileError) as err:
        load_refinement(tmp_path / "corrupt.fits")
    assert "checksum" in str(err.value) and _one_sentence(str(err.value))
    # valid checksums, invalid numbers
    cases = {"CSTEP": ("header", -1e-3, "CSTEP"), "WINHALF": ("header", 0.0, "WINHALF"),
             "COARSEW": ("header", 7, "COARSEW"), "NaN": ("basis", np.nan, "basis"),
             "MISSING": ("drop", "FSTEP", "FSTEP")}
    for name, (kind, value, word) in cases.items():
        with fits.open(good) as hdul:
            if kind == "header":
                hdul[0].header[name] = value
            elif kind == "drop":
                del hdul[0].header[value]
            else:
                hdul["BASIS"].data[0, 10] = value
            bad = tmp_path / f"bad_{name}.fits"
            hdul.writeto(bad, checksum=True)
        with pytest.raises(ReferenceFileError) as err:
            load_refinement(bad)
        msg = str(err.value)
        assert word in msg and str(bad) in msg and _one_sentence(msg), msg
    with pytest.raises(ReferenceFileError):
        load_refinement(tmp_path / "missing.fits")
    with pytest.raises(ValueError):
        model.replace(fine_step=0.0)


# ----------------------------------------------------------------------------- the basis builder
def test_builder_orthonormal_basis_and_band_numbers(model, models):
    from csst_sls_z.training.refine_basis import build_refinement_model
    instrument, sedlib = models
    np.testing.assert_allclose(model.basis @ model.basis.T, np.eye(model.n_vectors), atol=1e-10)
    assert model.n_vectors == 10 and model.libraries == ("REDROCK2016", "KCORRECT")
    assert model.dispersion == (instrument["GV"].dispersion, instrument["GI"].dispersion)
    assert model.resolution == (instrument["GV"].resolution, instrument["GI"].resolution)
    # every input vector lies in the span
    for lib in ("REDROCK2016", "KCORRECT"):
        v = sedlib.basis[lib]
        resid = v - (v @ model.basis.T) @ model.basis
        assert np.max(np.linalg.norm(resid, axis=1) / np.linalg.norm(v, axis=1)) < 1e-8
    one = build_refinement_model(sedlib, instrument, libraries=("KCORRECT",),
                                 extra_vectors=sedlib.basis["REDROCK2016"][:2], coarse_step=1e-3)
    assert one.n_vectors == 7 and one.libraries == ("KCORRECT", "SPSPCA") and one.coarse_step == 1e-3
    # the broadening: LSF (lambda/R), width and pixel in quadrature, less the basis's own resolution
    lsf = 1 / 250 / R.FWHM_PER_SIGMA
    assert model.sigma_loglam(0, 0.0) > lsf * 0.99
    assert model.sigma_loglam(0, 20.0) == pytest.approx(math.sqrt(
        lsf ** 2 + ((20 * 7.1 / R.FWHM_PER_SIGMA) ** 2 + 7.1 ** 2 / 12) / 5200 ** 2
        - (1 / 1000 / R.FWHM_PER_SIGMA) ** 2), rel=1e-12)


def test_sps_pca_vectors(models):
    from csst_sls_z.simulation import sps_library as S
    from csst_sls_z.training.refine_basis import sps_pca_vectors
    try:
        S.locate_grids()
    except S.SPSUnavailable as exc:
        pytest.skip(str(exc))
    _, sedlib = models
    vec = sps_pca_vectors(60, 3, 4, sedlib.wave)
    assert vec.shape == (4, sedlib.wave.size) and np.all(np.isfinite(vec))
    np.testing.assert_allclose(vec @ vec.T, np.eye(4), atol=1e-8)
