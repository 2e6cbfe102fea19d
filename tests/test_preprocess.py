"""The numba preprocessing kernels: masks, resampling, normalisation, SNR, NPIX."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from csst_sls_z.preprocess import WaveGrid, normalise, preprocess_bands, preprocess_gridded, rebin_gridded

GRID = WaveGrid(starts=(4000.0, 7000.0), steps=(10.0, 10.0), sizes=(50, 40))


def _band(waves, fluxes, errs, present=None):
    offsets = np.concatenate([[0], np.cumsum([len(w) for w in waves])]).astype(np.int64)
    return SimpleNamespace(wave=np.concatenate(waves).astype(float), flux=np.concatenate(fluxes).astype(float),
                           err=np.concatenate(errs).astype(float), offsets=offsets,
                           present=np.ones(len(waves), bool) if present is None else np.asarray(present))


def test_identity_on_the_grid_and_normalisation():
    rng = np.random.default_rng(0)
    gv_w, gi_w = GRID.centres("GV"), GRID.centres("GI")
    f1, e1 = rng.normal(5, 1, gv_w.size), rng.uniform(1, 3, gv_w.size)
    f2, e2 = rng.normal(5, 1, gi_w.size), rng.uniform(1, 3, gi_w.size)
    pp = preprocess_bands({"GV": _band([gv_w], [f1], [e1]), "GI": _band([gi_w], [f2], [e2])}, GRID, 1)
    scale = np.median(np.concatenate([e1, e2]))
    np.testing.assert_allclose(pp.x[0, :50, 0], f1 / scale, rtol=1e-5)
    np.testing.assert_allclose(pp.x[0, 50:, 1], e2 / scale, rtol=1e-5)
    assert pp.npix["GV"][0] == 50 and pp.npix["GI"][0] == 40
    np.testing.assert_allclose(pp.snr["GV"][0], np.mean(np.clip(f1, 0, None) / e1), rtol=1e-5)
    assert pp.coverage[0] == 1.0 and not pp.repaired[0]
    # The gridded path used in training gives the same input.
    xg = preprocess_gridded(np.concatenate([f1, f2])[None], np.concatenate([e1, e2])[None])
    np.testing.assert_allclose(xg, pp.x, rtol=1e-6)


def test_resampling_conserves_flux_and_propagates_errors():
    # Input pixels of 5 A: two land in each 10 A output pixel -> inverse-variance mean.
    w = np.arange(4000.0 - 2.5, 4500.0, 5.0)
    f = np.where(np.arange(w.size) % 2 == 0, 2.0, 4.0)
    e = np.where(np.arange(w.size) % 2 == 0, 1.0, 2.0)
    pp = preprocess_bands({"GV": _band([w], [f], [e])}, GRID, 1)
    ok = pp.valid[0, :50]
    expected_f = (2 / 1 + 4 / 4) / (1 / 1 + 1 / 4)                   # ivar-weighted mean = 2.4
    # Error of the weighted mean: sqrt(sum o^2 ivar) / sum(o ivar), o = 5 A overlaps.
    expected_e = np.sqrt(25 * (1 + 0.25)) / (5 * (1 + 0.25))
    scale = expected_e                                               # every output error is equal
    interior = np.where(ok)[0][1:-1]
    np.testing.assert_allclose(pp.x[0, interior, 0] * scale, expected_f, rtol=1e-5)
    np.testing.assert_allclose(pp.x[0, interior, 1], 1.0, rtol=1e-5)


def test_masks_repairs_and_missing_bands():
    gv_w = GRID.centres("GV")
    f = np.ones(gv_w.size)
    e = np.ones(gv_w.size)
    f_nan = f.copy()
    f_nan[:5] = np.nan
    e_bad = e.copy()
    e_bad[10:20] = -1.0
    perm = np.random.default_rng(1).permutation(gv_w.size)
    out_of_band = gv_w + 5000.0
    bands = {"GV": _band([gv_w, gv_w, gv_w[perm], out_of_band, gv_w], [f_nan, f, f[perm], f, f],
                         [e, e_bad, e[perm], e, e], present=[1, 1, 1, 1, 0])}
    pp = preprocess_bands(bands, GRID, 5)
    assert list(pp.npix["GV"]) == [45, 40, 50, 0, 0]
    assert list(pp.repaired) == [True, False, True, False, False]       # NaN and unsorted are repairs
    assert np.all(pp.x[1, 10:20] == 0)                                   # masked pixels are 0, 0
    assert np.all(pp.x[3] == 0) and np.all(pp.x[4] == 0)
    assert list(pp.npix["GI"]) == [0] * 5
    assert pp.coverage[2] == pytest.approx(50 / 90)


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_absurd_flux_scales_give_the_same_input(scale):
    rng = np.random.default_rng(2)
    w = GRID.centres("GV")
    f, e = rng.normal(3, 1, w.size), rng.uniform(0.5, 1.5, w.size)
    ref = preprocess_bands({"GV": _band([w], [f], [e])}, GRID, 1).x
    got = preprocess_bands({"GV": _band([w], [f * scale], [e * scale])}, GRID, 1).x
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_pixels_far_noisier_than_the_median_are_masked():
    MAX_REL_ERR = GRID.max_rel_err
    w = GRID.centres("GV")
    f = np.ones(w.size)
    e = np.ones(w.size)
    e[:3] = 10 * MAX_REL_ERR                       # band end where the throughput vanishes
    e[3] = 0.5 * MAX_REL_ERR                       # noisy but informative: kept
    pp = preprocess_bands({"GV": _band([w], [f], [e])}, GRID, 1)
    assert np.all(pp.x[0, :3] == 0)
    assert pp.x[0, 3, 1] == pytest.approx(0.5 * MAX_REL_ERR)
    assert pp.npix["GV"][0] == w.size              # NPIX and SNR still describe the input


def test_the_grid_carries_the_input_convention_numbers():
    """A stricter MAXRELER masks more; a stricter MINCOVER drops the half-covered end pixels."""
    from dataclasses import replace
    w = GRID.centres("GV")
    f, e = np.ones(w.size), np.ones(w.size)
    e[3] = 5.0
    strict = preprocess_bands({"GV": _band([w], [f], [e])}, replace(GRID, max_rel_err=4.0), 1)
    assert np.all(strict.x[0, 3] == 0) and strict.x[0, 4, 1] == 1.0
    wh = w[:10] + 5.0                              # the two end output pixels are half covered
    half = {"GV": _band([wh], [np.ones(10)], [np.ones(10)])}
    assert preprocess_bands(half, GRID, 1).valid.sum() == 11
    assert preprocess_bands(half, replace(GRID, min_cover=0.6), 1).valid.sum() == 9


def test_wavegrid_file_records_its_numbers_and_old_files_load_with_defaults(tmp_path, monkeypatch):
    from astropy.io import fits
    from dataclasses import replace
    from csst_sls_z.reffiles.tables import load_wavegrid, write_wavegrid
    from csst_sls_z.reffiles.header import ReferenceFileError
    new = replace(GRID, min_cover=0.6, max_rel_err=15.0)
    write_wavegrid(tmp_path / "w.fits", new, "DUMMY")
    assert load_wavegrid(tmp_path / "w.fits") == new
    # A schema-1 file written before the numbers were recorded: today's values.
    with fits.open(tmp_path / "w.fits") as hdul:
        for key in ("MINCOVER", "MAXRELER"):
            del hdul[0].header[key]
        hdul.writeto(tmp_path / "old.fits", checksum=True)
    old = load_wavegrid(tmp_path / "old.fits")
    assert (old.min_cover, old.max_rel_err) == (0.5, 20.0)
    # A later schema must record them.
    with fits.open(tmp_path / "old.fits") as hdul:
        hdul[0].header["SCHEMAV"] = 2
        hdul.writeto(tmp_path / "v2.fits", checksum=True)
    monkeypatch.setattr("csst_sls_z.reffiles.header.REFFILE_SCHEMA_VERSION", 2)
    with pytest.raises(ReferenceFileError, match="lacks 'MINCOVER'"):
        load_wavegrid(tmp_path / "v2.fits")


def test_shipped_sets_load_with_the_numbers_they_were_made_with():
    from pathlib import Path
    from csst_sls_z.network.weights import read_config
    from csst_sls_z.reffiles.tables import load_wavegrid
    root = Path(__file__).parents[1] / "reference_files" / "csst_sls_z_0003"
    grid = load_wavegrid(root / "wavegrid.fits")
    assert (grid.min_cover, grid.max_rel_err) == (0.5, 20.0)
    for reftype in ("backbone", "bnnhead"):
        cfg = read_config(root / f"{reftype}.fits", reftype)
        assert (cfg.head_mu_scale, cfg.head_sigma_offset) == (0.05, -4.6)


def test_coarsened_grid_shares_edges():
    grid = WaveGrid(starts=(4000.0, 6000.0), steps=(7.0, 8.5), sizes=(21, 16))
    coarse = grid.coarsened(2)
    assert coarse.sizes == (10, 8) and coarse.steps == (14.0, 17.0) and coarse.length == 18
    # Every coarse edge is a native edge (pairs from each band's first pixel).
    for band in grid.bands:
        assert np.allclose(coarse.edges(band), grid.edges(band)[: 2 * coarse.sizes[grid.bands.index(band)] + 1:2])
    assert grid.coarsened(1) is grid
    with pytest.raises(ValueError):
        grid.coarsened(0)


def test_rebin_gridded_is_the_stage_resampling_onto_the_coarse_grid():
    """Spectra on the native grid rebinned in pairs (training) give the network input that the
    stage's resampling of the same pixels onto the coarsened wavegrid gives."""
    rng = np.random.default_rng(3)
    grid = WaveGrid(starts=(4000.0, 6000.0), steps=(7.0, 8.5), sizes=(21, 16))
    n = 6
    flux = rng.normal(5.0, 2.0, (n, grid.length))
    err = rng.uniform(0.5, 3.0, (n, grid.length))
    err[0, 3] = 0.0                        # one of a pair masked: the coarse pixel keeps the other
    err[1, 4:6] = 0.0                      # both masked: the coarse pixel is masked
    err[2, 25] = np.nan
    bands = {}
    for band in grid.bands:
        lo, size = grid.offset(band), grid.sizes[grid.bands.index(band)]
        bands[band] = SimpleNamespace(wave=np.tile(grid.centres(band), n), flux=flux[:, lo:lo + size].ravel(),
                                      err=err[:, lo:lo + size].ravel(),
                                      offsets=np.arange(n + 1) * size, present=np.ones(n, bool))
    coarse = grid.coarsened(2)
    staged = preprocess_bands(bands, coarse, n)
    f2, e2 = rebin_gridded(flux, err, grid.sizes, 2)
    x = np.empty(f2.shape + (2,), np.float32)
    normalise(f2, e2, e2 > 0, x)
    assert x.shape == staged.x.shape == (n, coarse.length, 2)
    np.testing.assert_allclose(x, staged.x, rtol=1e-5, atol=1e-6)
    assert e2[1, 2] == 0.0 and e2[0, 1] > 0 and f2[0, 1] == pytest.approx(flux[0, 2])
    # Inverse-variance mean with the propagated error, by hand.
    w = 1.0 / err[3, 8:10] ** 2
    assert f2[3, 4] == pytest.approx(np.sum(w * flux[3, 8:10]) / w.sum())
    assert e2[3, 4] == pytest.approx(1.0 / np.sqrt(w.sum()))
