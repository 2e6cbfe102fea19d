"""The SED families: the registry, the SPS family through the forward model, TRUTH records.

Physics of the SPS library itself (Case B, doublets, BPT) is in tests/test_sps_library.py;
here the family is exercised as the simulator uses it.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from astropy.io import fits

from csst_sls_z import datamodel as dm
from csst_sls_z.cli import main as cli_main
from csst_sls_z.simulation import FamilySet, simulate_arrays, simulate_spectra
from csst_sls_z.simulation.families import FAMILIES, FamilyUnavailable, parse_families
from csst_sls_z.simulation.families.sps import universe_age_gyr

pytest.importorskip("astropy.cosmology")


@pytest.fixture(scope="module")
def sps_library(tmp_path_factory):
    from csst_sls_z.simulation.sps_library import build_sps_library, write_sps_library
    path = tmp_path_factory.mktemp("sps") / "sps_library.fits"
    write_sps_library(build_sps_library(120, 5), path)
    return path


@pytest.fixture(scope="module")
def all_families(models, sps_library):
    return FamilySet(models[1], "SPS:0.5,KCORRECT:0.3,REDROCK2016:0.2", sps_library=sps_library)


def test_registry_parses_names_and_weights(models):
    assert parse_families("sps:2, KCORRECT") == {"SPS": 2.0, "KCORRECT": None}
    for bad in ("FSPS", "SPS:0", "SPS:x", ""):
        with pytest.raises(ValueError):
            parse_families(bad)
    fs = FamilySet(models[1], "REDROCK2016:1,KCORRECT:3")
    np.testing.assert_allclose(fs.weights, [0.25, 0.75])
    assert set(FAMILIES) >= {"REDROCK2016", "KCORRECT", "SPS"}


def test_mixture_weights_and_truth_parameters(models, all_families):
    instrument = models[0]
    sim = simulate_arrays(3000, 4, "train", instrument, all_families)
    pop = sim.population
    for name, w in zip(all_families.names, all_families.weights):
        share = np.mean(pop.sed_lib == name)
        assert abs(share - w) < 0.03, (name, share, w)
    sps = pop.sed_lib == "SPS"
    # SPS fills SED_PARAM; the basis families fill SED_COEFF and leave SED_PARAM NaN.
    assert np.all(np.isfinite(pop.sed_param[sps]))
    assert np.all(np.isnan(pop.sed_param[~sps]))
    assert np.all(pop.sed_coeff[pop.sed_lib == "KCORRECT"].sum(axis=1) > 0)
    # No galaxy older than the universe at its redshift.
    age = pop.sed_param[sps, 1]
    assert np.all(age <= universe_age_gyr(pop.z[sps]) + 1e-9)
    # EW(H-alpha) independent of the continuum, rising with z, up to ~1000 A.
    ew = pop.sed_param[sps, 7]
    z = pop.z[sps]
    assert np.median(ew[z > 1.0]) > 2.0 * np.median(ew[z < 0.3])
    assert ew.max() <= 1000.0 and ew.max() > 200.0
    d4000 = pop.sed_param[sps, 4]
    assert abs(np.corrcoef(np.log(np.maximum(ew, 0.1)), d4000)[0, 1]) < 0.3


def test_sps_line_flux_conserved_through_the_forward_model(models, all_families):
    """Noiseless point sources: the extra electrons of the lines, turned back into flux and summed
    over each band, equal amplitude x (1 + z) x the lines' rest-frame flux within 1%."""
    from csst_sls_z.simulation.population import Population
    from csst_sls_z.simulation.sps_library import LINES
    instrument, sedlib = models
    fam = all_families.family("SPS")
    z = np.linspace(0.02, 1.45, 16)
    n = z.size
    index, coeff, params = fam.draw(z, np.random.default_rng(3))
    params[:, 7] = 150.0                                   # EW(H-alpha) / A, the same for all
    pop = Population(z=z, mag=np.full(n, 20.0), r_eff=np.full(n, 0.01), sersic_n=np.ones(n),
                     axis_ratio=np.ones(n), pa=np.zeros(n), sed_lib=np.full(n, "SPS"),
                     sed_index=index, sed_coeff=coeff, sed_param=params)
    no_lines = params.copy()
    no_lines[:, 7] = 0.0
    amp = np.full(n, 3.0)
    rest_l = fam.rest_flux(index, coeff, params)
    rest_c = fam.rest_flux(index, coeff, no_lines)
    sim_l = simulate_spectra(pop, instrument, all_families, np.random.default_rng(0), noise=False,
                             rest_flux=rest_l, amplitude=amp)
    sim_c = simulate_spectra(pop, instrument, all_families, np.random.default_rng(0), noise=False,
                             rest_flux=rest_c, amplitude=amp)
    line_wave = np.array([w for _, w in LINES])
    ratios = fam.lib.line_ratio[index]
    checked = 0
    for name in dm.BANDS_USED:
        band = instrument[name]
        lo, hi = band.wmin + 15 * band.dispersion, band.wmax - 15 * band.dispersion
        for i in range(n):
            obs = line_wave * (1 + z[i])
            inside = (obs > lo) & (obs < hi)
            near_edge = ((obs > band.wmin - 15 * band.dispersion) & ~inside
                         & (obs < band.wmax + 15 * band.dispersion))
            if not inside.any() or near_edge.any():
                continue
            expected = amp[i] * (1 + z[i]) * 150.0 * fam.lib.cont_halpha[index[i]] * ratios[i, inside].sum()
            measured = ((sim_l.bands[name].model[i].astype(float) - sim_c.bands[name].model[i])
                        * band.dispersion).sum()
            assert measured == pytest.approx(expected, rel=0.01), (name, z[i])
            checked += 1
    assert checked >= 4


def test_same_seed_same_bytes_for_every_family(tmp_path, sps_library):
    def product(out, family):
        argv = ["simulate", "--n", "30", "--seed", "9", "--population", "test", "--per-file", "100",
                "--out", str(out), "--families", family, "--sps-library", str(sps_library),
                "--variations", "training", "--no-progress", "--log-level", "ERROR"]
        assert cli_main(argv) == 0
        (path,) = out.glob("*.fits")
        return hashlib.sha256(path.read_bytes()).hexdigest(), path
    for family in ("REDROCK2016", "KCORRECT", "SPS"):
        a, path = product(tmp_path / f"{family}_a", family)
        b, _ = product(tmp_path / f"{family}_b", family)
        assert a == b, family
        with fits.open(path) as hdul:
            truth = hdul[dm.EXT_TRUTH]
            assert set(truth.data["SED_LIB"]) == {family}
            assert truth.header[f"{dm.KW_FAMILY_NAME}01"] == family
            if family == "SPS":
                assert truth.header[f"{dm.KW_FAMILY_PARAMS}01"].split(",")[-1] == "EW_HA"
                sha, seed, n = truth.header[f"{dm.KW_FAMILY_DATA}01"].split()
                from csst_sls_z.simulation.sps_library import load_sps_library
                lib = load_sps_library(sps_library)
                assert (sha, int(seed), int(n)) == (lib.sha256()[:16], lib.seed, len(lib))
            else:
                assert f"{dm.KW_FAMILY_DATA}01" not in truth.header
            assert np.ptp(truth.data["RESOLUTION"]) > 0           # the variations are recorded
    c, _ = product(tmp_path / "other", "SPS:1,KCORRECT:1")
    assert c != a


def test_sps_without_grids_is_one_clear_sentence(models, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CSST_SLS_Z_SPS_GRIDS", str(tmp_path))      # an empty directory
    with pytest.raises(FamilyUnavailable, match="pip install"):
        FamilySet(models[1], "SPS")
    rc = cli_main(["simulate", "--n", "5", "--seed", "1", "--population", "test", "--out", str(tmp_path / "o"),
                   "--families", "SPS", "--no-progress", "--log-level", "WARNING"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "sps" in err[0].lower(), err


def test_family_set_only_reuses_the_family_objects(models, all_families):
    one = all_families.only("SPS")
    assert one.names == ("SPS",) and one.family("SPS") is all_families.family("SPS")
    assert one.weights.tolist() == [1.0]
    with pytest.raises(ValueError, match="not among"):
        one.family("KCORRECT")

