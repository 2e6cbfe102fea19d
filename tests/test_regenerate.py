"""A smoke-scale regeneration end to end through the real code, and the stage on what it wrote."""
from __future__ import annotations

import json

import numpy as np
import pytest

from csst_sls_z.reference import load_reference_set


@pytest.fixture(scope="module")
def smoke_set(tmp_path_factory):
    from csst_sls_z.training.regenerate import main
    out = tmp_path_factory.mktemp("regen") / "csst_sls_z_9001"
    assert main(["--config", "smoke", "--out", str(out), "--no-progress", "--log-level", "WARNING"]) == 0
    return out


def test_manifest_complete_and_verifies(smoke_set):
    refset = load_reference_set(smoke_set)
    assert set(refset.paths) == {"instrument", "sedlib", "wavegrid", "backbone", "bnnhead", "calibration", "thresholds"}
    manifest = json.loads((smoke_set / "manifest.json").read_text())
    prov = manifest["provenance"]
    for key in ("seeds", "training_data_sha256", "tensorflow", "objective", "step_wall_s", "code_version", "config"):
        assert key in prov
    assert set(prov["step_wall_s"]) >= {"data", "backbone", "head", "calibrate", "evaluate"}


def test_evaluation_contract(smoke_set):
    ev = json.loads((smoke_set / "evaluation.json").read_text())
    for method in ("cnn", "bnn", "oracle", "template_fit"):
        assert {"sigma_nmad", "eta"} <= set(ev[method])
    assert {"ebar", "cov68", "cov95", "cov68_raw", "cov95_raw"} <= set(ev["bnn"])
    assert {"z_true", "snr_gi"} <= set(ev["bins"])
    assert (smoke_set / "figures" / "fig09_metrics_vs_z.png").exists()
    assert set(ev["backbone_histories"]) == {"zbins", "logcosh"}


def test_rerun_refuses_to_edit_a_finished_set(smoke_set, capsys):
    from csst_sls_z.training.regenerate import main
    assert main(["--config", "smoke", "--out", str(smoke_set)]) == 1
    assert "never edited in place" in capsys.readouterr().err


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
    from csst_sls_z.training.evaluate import FINE_STEP, oracle_redshifts
    instrument, sedlib = models
    sim = simulate_arrays(3, 5, "test", instrument, sedlib, noise=False)
    flux = np.concatenate([sim.bands["GV"].model, sim.bands["GI"].model], axis=1).astype(float)
    err = np.ones_like(flux) * np.median(np.abs(flux)) * 0.01
    z = oracle_redshifts(sim.population, flux, err, instrument, sedlib, 1.6, progress=False)
    assert np.all(np.abs(z - sim.population.z) <= FINE_STEP)
