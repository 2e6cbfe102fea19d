"""The science studies (``studies/``) and the figure scripts (``docs/figures/``) at tiny sizes, in-process.

Each study is called through its ``main(argv)`` (or the function its numbers come from) on a
few dozen objects: what is checked is that it runs, writes what its docstring says, and that
its numbers are the right kind (fractions in [0, 1], one row per set or family), not their
values, which need the full sizes in the docs. studies/learning_curves.py has its own file.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
REFS = ROOT / "reference_files"


# ----------------------------------------------------------------------------- calibration_variants
def test_calibration_variants_runs_on_cached_predictions(tmp_path, capsys):
    from studies import calibration_variants
    rng = np.random.default_rng(5)
    for name, n, z in (("val", 3000, rng.uniform(0, 1.6, 3000)), ("test", 2000, rng.uniform(0, 1.5, 2000))):
        sigma = np.full(n, 0.01)
        np.savez(tmp_path / f"pred_{name}.npz", z_true=z, mean=z + 2.0 * sigma * rng.standard_normal(n), sigma=sigma)
    assert calibration_variants.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "matched" in line or "log-loss" in line]
    assert len(rows) == 4
    raw = float(out.split("test ")[1].split()[0])
    assert raw < 0.45                                         # sigmas too small by 2: P(|N| < 0.5) = 0.38
    matched = [float(r.split("|")[3].split("/")[0]) for r in rows if "matched" in r]
    assert all(abs(m - 0.6827) < 0.03 for m in matched)      # matched fits hold the 68% level on test


def test_calibration_variants_without_predictions_exits_1(tmp_path, capsys):
    from studies import calibration_variants
    assert calibration_variants.main([str(tmp_path / "nope")]) == 1
    assert "error" in capsys.readouterr().err


# ----------------------------------------------------------------------------- pz_precision
def test_pz_precision_on_a_stage_output(sim_product, dummy_stage, tmp_path, capsys):
    """float32 and float16 metrics of one stage output: the same objects, probabilities in [0, 1]."""
    from studies import pz_precision
    out = tmp_path / "out.fits"
    dummy_stage.run([sim_product], out)
    assert pz_precision.main([str(sim_product), str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("PIT KS") == 2
    res = json.loads(text.split("JSON ", 1)[1])
    assert 0.0 <= res["zeroed_by_float16"] <= 1.0 and 0.0 <= res["max_abs_diff"] < 1e-2


# ----------------------------------------------------------------------------- refine_scores (the table)
def test_refine_scores_table_has_one_row_per_set():
    from studies import refine_scores
    rng = np.random.default_rng(2)
    n = 60
    zt = rng.uniform(0.1, 1.5, n)
    cat = np.zeros(n, dtype=[("OBJID", "i8"), ("Z", "f8"), ("Z_BNN", "f8"), ("SNR_GI", "f4"), ("ZWARN", "i8"),
                             ("Z_LO", "f8"), ("Z_HI", "f8")])
    cat["OBJID"] = np.arange(n)[::-1]                        # not the truth's order: score() matches by OBJID
    order = np.arange(n)[::-1]
    cat["Z_BNN"] = zt[order] + 0.01 * rng.standard_normal(n)
    cat["Z"] = zt[order] + 0.002 * rng.standard_normal(n)
    cat["SNR_GI"] = rng.uniform(1.0, 8.0, n)
    cat["Z_LO"], cat["Z_HI"] = cat["Z"] - 0.01, cat["Z"] + 0.01
    rec = refine_scores.score(cat, np.arange(n), zt)
    assert rec["all"]["refined"]["n"] == n and 0.0 <= rec["cov68"] <= 1.0
    assert rec["all"]["refined"]["sigma_nmad"] < rec["all"]["network"]["sigma_nmad"]
    rec["basis"] = ["REDROCK2016", "KCORRECT"]
    md = refine_scores.markdown({"temperature": 1.0, "sets": {"SPS": rec, "KCORRECT": rec}})
    assert sum(line.startswith(("| SPS |", "| KCORRECT |")) for line in md.splitlines()) == 4   # two tables


# ----------------------------------------------------------------------------- slow: whole studies, tiny
@pytest.mark.slow
def test_objective_curves_runs_tiny(tmp_path, monkeypatch):
    """Both objectives train for the same budget on the same data and land in the table and figure."""
    from step_clock import install

    from studies import objective_curves
    install(0.5, monkeypatch)               # the budget in steps, not seconds: 12 "s" is 6 steps per objective
    out = tmp_path / "curves"
    argv = ["--budget-s", "12", "--n-train", "600", "--n-val", "100", "--eval-every-s", "2", "--out", str(out),
            "--no-progress"]
    assert objective_curves.main(argv) == 0
    res = json.loads((out / "curves.json").read_text())
    assert set(res["curves"]) == {"zbins", "logcosh"}
    for c in res["curves"].values():
        times = [h["elapsed_s"] for h in c["history"]]
        assert len(times) >= 2 and times[-1] >= 12 * 0.9         # each ran its full, equal budget
        assert all(np.isfinite(h["sigma_nmad"]) and 0 <= h["eta"] <= 1 for h in c["history"])
    text = (out / "curves.md").read_text()
    assert "| zbins |" in text and "| logcosh |" in text
    assert (out / "objective_curves.png").stat().st_size > 10_000


@pytest.mark.slow
def test_leave_one_family_out_has_one_row_per_family(tmp_path, monkeypatch):
    """One network per left-out family plus the all-families one, each scored on the left-out
    family; the table has one row per family."""
    from step_clock import install

    from studies import leave_one_family_out as lofo
    install(0.2, monkeypatch)              # training budgets in steps (about 5 per network), not seconds
    argv = ["--config", "smoke", "--budget-s", "3", "--n-train", "600", "--n-val", "100", "--n-test", "40",
            "--n-oracle", "2", "--sps-library-n", "60", "--out", str(tmp_path)]
    assert lofo.main(argv) == 0
    res = json.loads((tmp_path / "lofo.json").read_text())
    assert list(res["families"]) == ["SPS", "KCORRECT", "REDROCK2016"]
    for r in res["families"].values():
        assert r["without"]["all"]["n"] == 40 and r["all"]["all"]["n"] == 40
        assert r["all"]["oracle"]["n"] == 2
    for fam in res["families"]:            # each left-out network really trained without its family
        cfg = json.loads((tmp_path / "work" / f"without_{fam}" / "work" / "config.json").read_text())
        assert fam not in cfg["families"] and len(cfg["families"].split(",")) == 2
    md = (tmp_path / "lofo.md").read_text()
    assert md.startswith("`python studies/leave_one_family_out.py ")
    assert sum(line.startswith(f"| {f} |") for f in res["families"] for line in md.splitlines()) == 3


@pytest.mark.slow
def test_compare_reference_sets_scores_each_set_on_the_same_file(tmp_path):
    """Two sets on one tiny product of one family: one row per set, the bound beside it."""
    from studies import compare_reference_sets as cmp
    argv = ["--refsets", str(REFS / "csst_sls_z_0003"), str(REFS / "csst_sls_z_0004"), "--families", "REDROCK2016",
            "--n", "24", "--n-oracle", "2", "--no-shifts", "--out", str(tmp_path),
            "--variant", "bf16", "--backbone-precision bfloat16"]
    assert cmp.main(argv) == 0
    res = json.loads((tmp_path / "compare.json").read_text())
    rec = res["sets"]["REDROCK2016"]
    assert rec["csst_sls_z_0003"]["n"] == rec["csst_sls_z_0004"]["n"] == rec["csst_sls_z_0004+bf16"]["n"] == 24
    moved = rec["csst_sls_z_0004+bf16"]["vs_default"]     # the variant ran with its option: Z moved, a little
    assert 0.0 < moved["median_dz"] < 0.01 and "vs_default" not in rec["csst_sls_z_0004"]
    assert rec["oracle"]["n"] == 2 and 0.0 <= rec["csst_sls_z_0004"]["cov68"] <= 1.0
    assert "| REDROCK2016 |" in (tmp_path / "compare.md").read_text()


@pytest.mark.slow
def test_refine_scores_runs_tiny(tmp_path):
    """The SPS family (scored with the set's own refinement file) through the stage and the table."""
    from studies import refine_scores
    argv = ["--refset", str(REFS / "csst_sls_z_0007"), "--families", "SPS", "--n", "24", "--sps-library-n", "30",
            "--n-oracle", "0", "--no-shifts", "--out", str(tmp_path)]
    assert refine_scores.main(argv) == 0
    res = json.loads((tmp_path / "refine_scores.json").read_text())
    rec = res["sets"]["SPS"]
    assert rec["all"]["refined"]["n"] == 24 and 0.0 <= rec["cov68"] <= 1.0
    assert "| SPS |" in (tmp_path / "refine_scores.md").read_text()


@pytest.mark.slow
def test_bound_vs_morphology_runs_tiny(capsys):
    from studies import bound_vs_morphology
    assert bound_vs_morphology.main(["--n", "6", "--seed", "3"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| real") or
            line.startswith("| point")]
    assert len(rows) == 2 and all(row.rstrip().endswith("| 6 |") for row in rows)


@pytest.mark.slow
def test_make_simulation_figures_runs_tiny(tmp_path, capsys):
    import importlib.util
    path = ROOT / "docs" / "figures" / "make_simulation_figures.py"
    spec = importlib.util.spec_from_file_location("make_simulation_figures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--out", str(tmp_path), "--n", "300"]) == 0
    for name in ("snr_histograms.png", "example_spectra.png", "self_broadening.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name
    assert "## Depth check" in capsys.readouterr().out
