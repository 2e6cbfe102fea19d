"""A smoke-scale regeneration end to end through the real code, and the stage on what it wrote."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from csst_sls_z.reffiles.sets import load_reference_set


@pytest.fixture(scope="module")
def smoke_set(tmp_path_factory):
    from csst_sls_z.training.regenerate import main
    import contextlib
    import io
    out = tmp_path_factory.mktemp("regen") / "csst_sls_z_9001"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["--config", "smoke", "--out", str(out), "--no-progress", "--log-level", "WARNING"]) == 0
    (out.parent / "stdout.txt").write_text(stdout.getvalue())
    return out


@pytest.mark.slow
def test_regenerate_ends_with_the_set_and_how_to_use_it(smoke_set):
    lines = (smoke_set.parent / "stdout.txt").read_text().splitlines()
    assert lines == [f"reference set written: {smoke_set}",
                     f"use it with: csst-sls-z run IN.fits -o OUT.fits --reference-dir {smoke_set}"]


@pytest.mark.slow
def test_manifest_complete_and_verifies(smoke_set):
    from csst_sls_z.datamodel import REFTYPES
    refset = load_reference_set(smoke_set, optional=("refinement",))
    assert set(refset.paths) == set(REFTYPES)         # the refinement file too (step refine)
    manifest = json.loads((smoke_set / "manifest.json").read_text())
    prov = manifest["provenance"]
    for key in ("seeds", "training_data_sha256", "tensorflow", "objective", "step_wall_s", "code_version", "config"):
        assert key in prov
    assert set(prov["step_wall_s"]) >= {"data", "backbone", "head", "calibrate", "refine", "evaluate"}


@pytest.mark.slow
def test_evaluation_contract(smoke_set):
    ev = json.loads((smoke_set / "evaluation.json").read_text())
    for method in ("cnn", "bnn", "oracle", "template_fit"):
        assert {"sigma_nmad", "eta"} <= set(ev[method])
    assert {"ebar", "cov68", "cov95", "cov68_raw", "cov95_raw"} <= set(ev["bnn"])
    assert {"z_true", "snr_gi"} <= set(ev["bins"])
    assert (smoke_set / "figures" / "fig09_metrics_vs_z.png").exists()
    assert set(ev["backbone_histories"]) == {"zbins", "logcosh"}
    # the refinement beside the network, on the same test set and bins
    assert {"sigma_nmad", "eta", "cov68", "cov95", "refine_failed"} <= set(ev["refined"])
    assert "refined" in ev["bins"]["snr_gi"] and "cov68" in ev["bins"]["snr_gi"]["refined"]


@pytest.mark.slow
def test_generalisation_tables_cover_every_family_and_shift(smoke_set, capsys):
    """The smoke set trains on all families with the instrument variations on; its evaluation
    scores each family against its own bound and each shifted instrument, and the report prints it."""
    from csst_sls_z.training.evaluate_generalisation import shifted_options
    from csst_sls_z.training.report import main as report
    manifest = json.loads((smoke_set / "manifest.json").read_text())
    prov = manifest["provenance"]
    assert prov["variations"] == "training"
    assert set(prov["sed_families"]["families"].split(",")) == {"SPS:0.5", "KCORRECT:0.3", "REDROCK2016:0.2"}
    assert len(prov["sed_families"]["SPS"]["library_sha256"]) == 64
    gen = json.loads((smoke_set / "evaluation.json").read_text())["generalisation"]
    assert set(gen["families"]) == {"SPS", "KCORRECT", "REDROCK2016"}
    for rec in gen["families"].values():
        assert {"sigma_nmad", "eta", "cov68", "cov95", "snr_gt3", "z_bins", "flags", "oracle",
                "bnn_on_oracle_subset"} <= set(rec)
        assert {"kept", "eta_kept", "flag_completeness"} <= set(rec["flags"])
        assert rec["n"] == 60 and rec["oracle"]["n"] == 3
    # Each family's refinement is scored with a basis that does not hold it.
    for name, rec in gen["families"].items():
        assert {"sigma_nmad", "eta", "cov68", "snr_gt3", "snr_bins"} <= set(rec["refined"])
        assert name not in rec["refined"]["basis"], rec["refined"]["basis"]
        assert "refined_on_oracle_subset" in rec
        recall = rec["peak_recall"]              # the truth within a refinement window
        assert 0.0 <= recall["all"] <= 1.0 and len(recall["snr_bins"]["recall"]) == 6
    assert set(gen["shifts"]) == set(shifted_options()) == {"resolution", "disp_scale", "err_scale",
                                                            "flux_tilt", "morph_kernel"}
    assert gen["shifts"]["resolution"]["edge"]["value"] == 200.0
    assert gen["shifts"]["resolution"]["beyond"]["value"] == 175.0
    assert report([str(smoke_set)]) == 0
    out = capsys.readouterr().out
    assert "### Per SED family" in out and "### Shifted instrument" in out
    assert "### Peak recall" in out
    assert out.count("| SPS |") == 2 and "| flux_tilt | beyond | 0.15 |" in out      # family and recall tables
    assert "### Refined against the network, by GI SNR" in out
    for name, rec in gen["families"].items():       # one row per GI SNR bin, the basis named
        assert out.count(f"| {name} ({'+'.join(rec['refined']['basis'])}) |") == 6


@pytest.mark.slow
def test_rerun_refuses_to_edit_a_finished_set(smoke_set, capsys):
    from csst_sls_z.training.regenerate import main
    assert main(["--config", "smoke", "--out", str(smoke_set)]) == 1
    assert "never edited in place" in capsys.readouterr().err


@pytest.mark.slow
def test_stage_runs_on_the_regenerated_set(smoke_set, sim_product, tmp_path):
    from astropy.io import fits
    from csst_sls_z.stage import RedshiftStage
    result = RedshiftStage(reference_dir=smoke_set, samples=8).run([sim_product], tmp_path / "o.fits")
    assert result.outputs
    cat = fits.getdata(tmp_path / "o.fits", "SLS_REDSHIFT")
    assert np.isfinite(cat["Z"]).all()
    assert fits.getheader(tmp_path / "o.fits", "SLS_REDSHIFT")["REFSET"].startswith("csst_sls_z_9001")


def test_oracle_recovers_a_noiseless_redshift(models):
    from csst_sls_z.simulation import simulate_arrays
    from csst_sls_z.training.baselines import FINE_STEP, oracle_redshifts
    instrument, sedlib = models
    sim = simulate_arrays(3, 5, "test", instrument, sedlib, noise=False)
    flux = np.concatenate([sim.bands["GV"].model, sim.bands["GI"].model], axis=1).astype(float)
    err = np.ones_like(flux) * np.median(np.abs(flux)) * 0.01
    z = oracle_redshifts(sim.population, flux, err, instrument, sedlib, 1.6, progress=False)
    assert np.all(np.abs(z - sim.population.z) <= FINE_STEP)


@pytest.mark.slow
def test_reuse_network_reruns_calibration_and_evaluation(smoke_set, tmp_path):
    from conftest import sha256
    from csst_sls_z.training.regenerate import main
    out = tmp_path / "csst_sls_z_9002"
    assert main(["--config", "smoke", "--out", str(out), "--reuse-network", str(smoke_set),
                 "--calibration-target", "validation", "--no-progress", "--log-level", "WARNING"]) == 0
    for reftype in ("backbone", "bnnhead"):
        assert sha256(out / f"{reftype}.fits") == sha256(smoke_set / f"{reftype}.fits")
    assert sha256(out / "calibration.fits") != sha256(smoke_set / "calibration.fits")
    prov = json.loads((out / "manifest.json").read_text())["provenance"]
    assert prov["network_from"]["set"].startswith("csst_sls_z_9001")
    assert prov["config"]["calibration_target"] == "validation"
    assert f"--reuse-network {smoke_set}" in prov["command"] and "--calibration-target validation" in prov["command"]
    assert prov["command"].endswith("--no-progress --log-level WARNING")       # the command as given
    old, new = (json.loads((d / "evaluation.json").read_text()) for d in (smoke_set, out))
    # Same network, data and seeds: the uncalibrated predictions are the same.
    assert new["cnn"] == pytest.approx(old["cnn"], rel=1e-6)
    assert new["bnn"]["cov68_raw"] == pytest.approx(old["bnn"]["cov68_raw"])
    assert new["backbone_histories"] == old["backbone_histories"]
    load_reference_set(out)


@pytest.mark.slow
def test_reuse_network_refuses_another_configuration(smoke_set, tmp_path, capsys):
    from csst_sls_z.training.regenerate import main
    out = tmp_path / "csst_sls_z_9003"
    assert main(["--config", "cpu", "--out", str(out), "--reuse-network", str(smoke_set), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "cannot be reused" in err and "Traceback" not in err


def test_calibration_weights_carry_flat_z_to_the_survey_nz(tmp_path):
    from csst_sls_z.simulation.population import csst_nz_sample
    from csst_sls_z.training.regenerate import Regeneration
    regen = Regeneration("smoke", tmp_path / "r", progress=False)
    rng = np.random.default_rng(3)
    z_flat = rng.uniform(0.0, 1.6, 200_000)
    w = regen.calibration_weights(z_flat)
    assert w.mean() == pytest.approx(1.0, abs=0.01)
    assert np.all(w[z_flat > 1.5] == 0)
    # Weighted flat z has the survey's mean redshift.
    assert np.average(z_flat, weights=w) == pytest.approx(csst_nz_sample(200_000, rng).mean(), abs=0.005)
    plain = Regeneration("smoke", tmp_path / "p", progress=False, overrides={"calibration_target": "validation"})
    assert plain.calibration_weights(z_flat) is None


def test_resume_refuses_another_configuration(tmp_path):
    from csst_sls_z.training.regenerate import Regeneration
    Regeneration("smoke", tmp_path / "r", progress=False)
    Regeneration("smoke", tmp_path / "r", progress=False)                 # same options: resumes
    with pytest.raises(ValueError, match="calibration_target"):
        Regeneration("smoke", tmp_path / "r", progress=False, overrides={"calibration_target": "validation"})


def test_threshold_choice_follows_its_named_rules():
    from csst_sls_z.training import threshold_choice as tc
    rng = np.random.default_rng(5)
    n = 4000
    zt = rng.uniform(0, 1.5, n)
    snr = rng.uniform(0.5, 50, n)
    z = zt.copy()
    faint = snr < 4.0
    z[faint & (rng.random(n) < 0.6)] += 0.5                 # 60% outliers below SNR 4
    zerr = np.where(snr < 4.0, 0.2, 0.005) * (1 + z)
    feats = rng.normal(size=(3000, 4))
    from csst_sls_z.training.metrics import outlier_fraction
    # One flag at a time (used when the validation set has too few outliers to choose the clean
    # sample on): the largest scanned SNR_GI percentile below which >= 25% are outliers.
    low_snr = tc.choose_low_snr(z, zt, snr)
    scanned = np.percentile(snr, tc.LOW_SNR_SCAN)
    k = int(np.flatnonzero(scanned == low_snr)[0])
    assert outlier_fraction(z[snr < low_snr], zt[snr < low_snr]) >= tc.LOW_SNR_ETA
    assert k == 0 or outlier_fraction(z[snr < scanned[k - 1]], zt[snr < scanned[k - 1]]) < tc.LOW_SNR_ETA
    assert tc.choose_large_zerr(z, zt, zerr / (1 + z)) < 0.2      # the outliers' ZERR/(1+Z) is flagged
    # Together (issue 15): the clean sample, the most kept with eta <= 3%, here everything but the faint outliers.
    th, why = tc.choose_thresholds(z, zerr, zt, snr, rng.normal(size=(n, 4)), feats, 0.0, 1.6)
    keep = ~(snr < th.low_snr) & ~(zerr / (1 + z) > th.large_zerr)
    assert outlier_fraction(z[keep], zt[keep]) <= tc.CLEAN_ETA and keep.mean() >= 0.9
    assert th.multiple_peaks is None and "chosen together" in why[0] and "3%" in why[0]
    assert 1.0 < th.ood_max < 2.5                           # sqrt(chi2_4 / 4) at 99.9%: 2.15
    assert "99.9th" in why[-1]
    # No selection of MIN_SELECTED objects qualifies: the fallback percentiles.
    clean = tc.choose_thresholds(zt, 0.005 * (1 + zt), zt, snr, feats, feats, 0.0, 1.6)[0]
    assert clean.low_snr == pytest.approx(np.percentile(snr, tc.LOW_SNR_FALLBACK))
    assert clean.large_zerr == pytest.approx(np.percentile(0.005 * np.ones(n), tc.LARGE_ZERR_FALLBACK))


def test_clean_sample_goal_out_of_reach_keeps_the_minimum_with_the_least_eta():
    """Issue 15: when no combination keeping CLEAN_MIN_KEPT reaches CLEAN_ETA, the clean sample
    keeps (about) CLEAN_MIN_KEPT with the smallest eta; the weights count."""
    from csst_sls_z.training import threshold_choice as tc
    from csst_sls_z.training.metrics import outlier_fraction
    rng = np.random.default_rng(11)
    n = 6000
    zt = rng.uniform(0.1, 1.5, n)
    snr = rng.uniform(0.3, 8, n)
    bad = rng.random(n) < 0.45 * np.exp(-snr / 4) + 0.1           # 10% outliers at any SNR: 3% is out of reach
    z = np.where(bad, (1 + zt) * 0.76 - 1, zt)
    rel = 0.01 * rng.uniform(0.5, 1.5, n) * (1 + 4 / snr)          # ZERR says as much as SNR, no more
    low, large, multiple, why = tc.choose_clean_sample(z, zt, snr, rel)
    keep = ~(snr < low) & ~(rel > large)
    assert tc.CLEAN_MIN_KEPT <= keep.mean() < tc.CLEAN_MIN_KEPT + 0.03
    assert outlier_fraction(z[keep], zt[keep]) < 0.8 * outlier_fraction(z, zt)
    assert multiple is None and "no combination keeping" in why[0]
    # Weighting the bright objects up moves the cut: the weighted kept fraction is what is held.
    w = np.where(snr > 4, 5.0, 1.0)
    low_w, large_w, _, _ = tc.choose_clean_sample(z, zt, snr, rel, weights=w)
    keep_w = ~(snr < low_w) & ~(rel > large_w)
    assert np.average(keep_w, weights=w) >= tc.CLEAN_MIN_KEPT and keep_w.mean() < keep.mean()


@pytest.mark.slow
def test_the_set_calibrates_its_pz_and_chooses_multiple_peaks(smoke_set):
    """Issue 15: the calibrate step fits the p(z) temperature and the MULTIPLE_PEAKS threshold
    (with its reason), and the evaluation reports the p(z) metrics on every test set."""
    from astropy.io import fits
    from csst_sls_z.reffiles.tables import load_calibration, load_thresholds
    cal = load_calibration(smoke_set / "calibration.fits")
    assert cal.pz is not None and cal.pz.temperature > 0
    assert load_thresholds(smoke_set / "thresholds.fits").multiple_peaks is not None
    assert "MULTIPLE_PEAKS" in " ".join(str(h) for h in fits.getheader(smoke_set / "thresholds.fits")["HISTORY"])
    ev = json.loads((smoke_set / "evaluation.json").read_text())
    pz = ev["pz"]
    assert (pz["kind"], pz["calibrated"], pz["method"]) == ("SOFTMAX", True, "temperature+pit")
    assert 0 <= pz["pit"]["ks"] <= 1 and sum(pz["pit"]["histogram"]) == pz["n"] > 0
    assert set(pz["hpd_coverage"]) == {"0.68", "0.95"} and "uncalibrated" in pz
    assert {"completeness_outliers", "flagged_good", "threshold"} <= set(pz["multiple_peaks"])
    assert set(pz["clean_sample"]["curves"]["zerr"]["at"]) == {"0.5", "0.6", "0.7"}
    assert (smoke_set / "figures" / "pz_nz.png").exists()
    for rec in ev["generalisation"]["families"].values():
        assert "ks" in rec["pz"]["pit"] and "multiple_peaks" in rec["pz"]
        assert set(rec["pz"]["clean_sample_curve"]["at"]) == {"0.5", "0.6", "0.7"}
    from csst_sls_z.training.report import pz_table
    table = pz_table(ev)
    assert table.count("\n| ") == 1 + 3 + 9 and "| nominal | " in table and "| family SPS | " in table
    assert "- / - / -" not in table                 # every test set has its clean-sample curve


def test_backbone_budget_is_an_override_recorded_in_the_command(capsys):
    """--backbone-budget-s (how 0005 was trained) is checked like every count and, when it is not the
    config's, repeated in the provenance command so the set can be rebuilt and reused."""
    from csst_sls_z.training.regenerate import REGEN_CONFIGS, parser
    args = parser().parse_args(["--config", "cpu", "--out", "x", "--backbone-budget-s", "4500"])
    assert args.backbone_budget_s == 4500 and REGEN_CONFIGS["cpu"].backbone_budget_s == 2700
    with pytest.raises(SystemExit):
        parser().parse_args(["--config", "cpu", "--out", "x", "--backbone-budget-s", "0"])
    assert "--backbone-budget-s" in capsys.readouterr().err
    prov = json.loads((Path(__file__).parents[1] / "reference_files" / "csst_sls_z_0005" / "manifest.json")
                      .read_text())["provenance"]
    assert prov["command"].endswith("--backbone-budget-s 4500") and prov["config"]["backbone_budget_s"] == 4500


@pytest.mark.slow
def test_a_set_on_a_coarsened_grid_runs_in_the_stage(sim_product, tmp_path):
    """grid_rebin = 2: the wavegrid joins pixel pairs of the instrument's grid, the backbone reads
    that many pixels, and the stage (which resamples the product's native pixels onto it) runs."""
    from astropy.io import fits
    from csst_sls_z.network.weights import read_config
    from csst_sls_z.reffiles.tables import load_wavegrid
    from csst_sls_z.stage import RedshiftStage
    from csst_sls_z.training.regenerate import Regeneration
    regen = Regeneration("smoke", tmp_path / "csst_sls_z_9002", progress=False, overrides={"grid_rebin": 2})
    regen.run()
    out = tmp_path / "csst_sls_z_9002"
    grid = load_wavegrid(out / "wavegrid.fits")
    want = regen.native_grid.coarsened(2)
    assert grid.sizes == want.sizes
    assert np.allclose(grid.starts, want.starts) and np.allclose(grid.steps, want.steps)
    assert grid.length == sum(n // 2 for n in regen.native_grid.sizes)
    assert read_config(out / "backbone.fits", "backbone").input_length == grid.length
    result = RedshiftStage(reference_dir=out, samples=8).run([sim_product], tmp_path / "o.fits")
    assert result.outputs
    cat = fits.getdata(tmp_path / "o.fits", "SLS_REDSHIFT")
    assert np.isfinite(cat["Z"]).all()
