"""The benchmark suite (``python -m benchmarks``): every registered benchmark at its tiny size,
in this process, on one shared workspace, with its returned numbers checked: rates positive,
sizes as asked, and the consistency checks the benchmarks make themselves (numba and numpy
agree, both BNN paths agree, the FLOP counts agree). Speed itself is not checked: tiny sizes on
a shared machine say the code works, not how fast it is.

Most benchmarks start TensorFlow networks or fresh processes, so they are marked slow; the
registry, the runner, the report and the reference implementations are checked in the default run.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import report
from benchmarks.suite import REGISTRY, main, parse_params, run_suite
from benchmarks.workspace import Workspace

FAST = {"matmul", "preprocess", "fail_fast"}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("bench_ws"))


@pytest.fixture(scope="module")
def tiny(ws):
    """``tiny(name)``: the benchmark's result at its tiny size, run once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = REGISTRY[name].run(ws, "tiny")
        return cache[name]
    return get


def _sizes(name):
    return REGISTRY[name].sizes["tiny"]


# ----------------------------------------------------------------------------- what each benchmark returns
def check_matmul(r):
    assert r["n"] == _sizes("matmul")["n"]
    assert r["tf_gflops"] > 0 and r["numpy_gflops"] > 0


def check_preprocess(r):
    assert r["n"] == _sizes("preprocess")["n"]
    assert r["numba_per_s"] > 0 and r["numpy_per_s"] > 0 and r["speedup"] > 0
    assert r["agree"] is True and r["numba_threads"] >= 1


def check_backbone(r):
    assert set(r) == {"cpu", "paper"}
    for net, b in r.items():
        assert b["n"] == _sizes("backbone")["n"] and b["params"] > 0
        assert min(b["spectra_per_s"], b["keras_per_s"], b["bfloat16_per_s"], b["achieved_gflops"]) > 0
    cpu, paper = r["cpu"], r["paper"]
    assert abs(cpu["profiler_flops"] / cpu["flops_per_spectrum"] - 1) < 0.02   # analytic count = TF's
    assert "profiler_flops" not in paper                                       # tiny: cpu only
    assert paper["flops_per_spectrum"] > 10 * cpu["flops_per_spectrum"]


def check_bnn(r):
    size = _sizes("bnn")
    assert r["samples"] == 200 and r["n_naive"] == size["n_naive"] and r["n_all"] == size["n"]
    assert min(r["once_per_s"], r["once_per_s_same_n"], r["naive_per_s"], r["ratio_same_n"]) > 0
    assert r["max_dmean_over_sigma"] < 1e-3             # backbone once == S full passes, same noise
    assert r["eager_checked"] is False
    # S = 200 head samples on 128 features, units 256 and 128: (128*256 + 2*256*128 + 128*2) MACs each
    assert r["head_flops_per_spectrum"] == 2 * (128 * 256 + 200 * (128 * 256 + 2 * 256 * 128 + 128 * 2))
    assert r["backbone_flops_per_spectrum"] > r["head_flops_per_spectrum"]


def check_e2e(r):
    size = _sizes("e2e")
    small, large, bf16 = r["small"], r["large"], r["bfloat16"]
    assert (small["n"], large["n"], bf16["n"]) == (size["n"], size["n_large"], size["n"])
    for run in (small, large, bf16):
        assert run["status"] in ("PERFECT", "WARNING") and run["spectra_per_s"] > 0 and run["maxrss_mib"] > 0
    assert small["setup_s"] > 0 and r["process_wall_s"] > small["run_s"] + large["run_s"]
    assert 0 < small["vmhwm_mib"] <= large["vmhwm_mib"]


def check_refine_e2e(r):
    assert r["n"] == _sizes("refine_e2e")["n"] and r["trained"] is True
    for rates in r["spectra_per_s"].values():
        assert len(rates) == _sizes("refine_e2e")["repeats"] and min(rates) > 0
    assert r["refined_over_network"] > 0


def check_memory(r):
    sizes = _sizes("memory")["sizes"]
    assert [row["n"] for row in r["rows"]] == sizes + sizes          # full output, then catalogue only
    for row in r["rows"]:
        assert row["anon_peak_mib"] > 50 and row["file_peak_mib"] > 0   # TensorFlow alone is well over 50 MiB
        assert row["spectra_per_s"] > 0
    assert all(r["input_mib"][n] > 0 for n in sizes)


def check_startup(r):
    assert r["objects"] == 24 * _sizes("startup")["copies"]
    assert all(v > 0 for v in r["processes"].values())
    ends = list(r["phase_ends_s"].values())
    assert ends == sorted(ends) and r["to_first_chunk_s"] > 0
    assert r["processes"]["import tensorflow"] > r["processes"]["python -c pass"]


def check_fail_fast(r):
    rows = {row["case"]: row for row in r["rows"]}
    assert len(rows) == 8
    for case, row in rows.items():
        assert row["wall_median_s"] > 0
        if case.startswith("(reference)"):
            assert row["exit"] == 0
        else:                                           # an error, before TensorFlow
            assert row["exit"] != 0 and row["tensorflow_imported"] is False
    assert 0 < r["slowest_error_s"] == max(row["wall_median_s"] for c, row in rows.items()
                                           if not c.startswith("(reference)"))


def check_head(r):
    head, stage = r["head"], r["stage"]
    assert head["objects"] == _sizes("head")["objects"] and head["samples"] == _sizes("head")["samples"]
    assert "reference" in head["rows"] and "backbone" in head["rows"]
    for row in head["rows"].values():
        assert row["ms_per_spectrum"] > 0 and row["speedup_vs_reference"] > 0
    # the same arithmetic on the same noise: the fused per-object path gives the reference's means
    assert head["rows"]["var once, z folded, XLA"]["agreement"]["max_dmean_over_sigma"] < 1e-2
    assert head["head_over_backbone"] > 0 and head["predict"]["z_cnn_identical"] is True
    assert stage["objects"] == 24 * _sizes("head")["copies"] and len(stage["ways"]) == 4
    for way in stage["ways"].values():
        assert way["spectra_per_s"] > 0 and way["speedup"] > 0


def check_refine(r):
    size = _sizes("refine")
    assert r["n"] == size["n"] and r["n_full"] == size["n_full"]
    assert min(r["rate_1_thread"], r["rate_all"], r["full_rate_1_thread"], r["intervals_rate"]) > 0
    assert sum(r["status"]) == size["n"] and r["evaluations_mean"] > 0


def check_simulation(r):
    labels = [label for label, _ in r["rows"]]
    for family in ("REDROCK2016", "KCORRECT", "SPS"):
        assert any(label.endswith(f"objects, {family}") for label in labels), family
    # 5 general rows, the SPS library row, one per family alone and the training mixture
    assert any("training variations" in label for label in labels) and len(labels) == 10
    rates = [float(v.split()[0].replace(",", "")) for label, v in r["rows"] if label.startswith("simulate_")]
    assert len(rates) == 6 and min(rates) > 0


def check_redrock(r):
    pytest.importorskip("redrock")
    assert r["is_redrock"] is True and r["n"] == _sizes("redrock")["n"]
    assert set(r["peers"]) == {"default", "coarse"} and r["speed_ratio"] > 0 and r["stage_per_s"] > 0
    for peer in r["peers"].values():
        assert peer["method"].startswith("redrock ") and peer["per_s"] > 0 and peer["n"] == r["n"]
        assert len(peer["accuracy"]) == 7 and peer["accuracy"][0]["n"] == r["n"]
    assert r["peers"]["coarse"]["n_redshifts"] < r["peers"]["default"]["n_redshifts"]
    assert len(r["stage_accuracy"]) == 7


def check_batch(r):
    pytest.importorskip("distributed")
    size = _sizes("batch")
    assert r["n_total"] == size["files"] * size["objects_per_file"]
    assert [run["processes"] for run in r["runs"]] == [1] + [int(w) for w in size["workers"].split(",")]
    for run in r["runs"]:
        assert run["wall"] > 0 and run["spectra_per_s"] > 0 and min(run["rss"]) > 0
    assert all(run["same"] is True for run in r["runs"][1:])     # batch catalogues hold the stage's Z


CHECKS = {name: globals()[f"check_{name}"] for name in REGISTRY}


def test_every_registered_benchmark_has_a_check_and_both_sizes():
    assert set(CHECKS) == set(REGISTRY)
    for b in REGISTRY.values():
        assert set(b.sizes) == {"full", "tiny"}
        assert set(b.sizes["full"]) <= set(b.sizes["tiny"]), b.name      # every full size has a tiny one
        assert b.name in report.SECTIONS


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in REGISTRY])
def test_benchmark_runs_tiny(name, tiny):
    CHECKS[name](tiny(name))


@pytest.mark.slow
def test_page_of_the_core_benchmarks(tiny):
    """Where the time goes and the targets, from the benchmarks of one run."""
    names = ("matmul", "preprocess", "backbone", "bnn", "e2e")
    run = {"quick": True, "command": "python -m benchmarks --quick", "started": "now", "wall_s": 1.0,
           "machine": {"cpu": "x", "cores": 2, "python": "3", "numpy": "2", "numba": "0", "tensorflow": "2",
                       "redrock": "0", "load_1min": 0.0}, "results": {n: tiny(n) for n in names}, "failed": {}}
    bd = report.breakdown(run["results"])
    assert all(bd[k] >= 0 for k in ("preprocess", "backbone", "head", "io_and_rest")) and bd["e2e"] > 0
    # the floor is the network's multiply-adds at the measured matmul rate (the tiny matmul is too small
    # for the machine's peak, so its size against e2e is not asserted: timings are not tested)
    res = run["results"]
    flops = res["bnn"]["backbone_flops_per_spectrum"] + res["bnn"]["head_flops_per_spectrum"]
    assert flops > 0 and bd["floor"] == pytest.approx(1e3 * flops / (res["matmul"]["tf_gflops"] * 1e9))
    rows = report.targets(run["results"])
    assert len(rows) == 5 and all(isinstance(ok, bool) for _, _, ok, _ in rows)
    page = report.markdown(run)
    for name in names:
        assert f"## {report.SECTIONS[name][0]}\n" in page
    assert "## Where the time goes" in page and "## Targets" in page


# ----------------------------------------------------------------------------- the runner
def test_runner_writes_the_page_and_the_numbers(tmp_path):
    out = tmp_path / "perf.md"
    assert main(["matmul", "--quick", "--out", str(out), "--workdir", str(tmp_path / "work"),
                 "--param", "matmul.n=128"]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    assert res["quick"] is True and list(res["results"]) == ["matmul"] and res["failed"] == {}
    assert res["sizes"]["matmul"] == {"n": 128, "repeats": 1} and res["results"]["matmul"]["n"] == 128
    assert res["results"]["matmul"]["tf_gflops"] > 0 and res["wall_s"] > 0
    assert "## Yardstick: dense matmul" in out.read_text()


def test_runner_records_a_failed_benchmark_and_exits_1(tmp_path, monkeypatch):
    def broken(ws, **size):
        raise RuntimeError("no such machine")
    import benchmarks.bench_core
    monkeypatch.setattr(benchmarks.bench_core, "measure_matmul", broken)
    with Workspace(tmp_path) as ws:
        run = run_suite(["matmul"], ws, "tiny")
    assert run["results"] == {} and run["failed"] == {"matmul": "RuntimeError: no such machine"}
    assert "## Failed" in report.markdown(run)
    assert main(["matmul", "--quick", "--out", str(tmp_path / "p.md"), "--workdir", str(tmp_path)]) == 1


def test_runner_rejects_unknown_names_and_params(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["no_such_benchmark"])
    assert exc.value.code == 2 and "unknown benchmark" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["matmul", "--param", "matmul.size=3"])
    assert parse_params(["e2e.n_large=20000", "batch.workers=1,2"]) == {"e2e": {"n_large": 20000},
                                                                         "batch": {"workers": "1,2"}}


def test_the_package_never_imports_the_benchmarks_or_the_studies():
    """benchmarks/ and studies/ use csst_sls_z; nothing in csst_sls_z or pipeline_hooks points back."""
    import ast
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    for package in ("csst_sls_z", "pipeline_hooks"):
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and not node.level:
                    names = [node.module or ""]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                assert not {n.split(".")[0] for n in names} & {"benchmarks", "studies"}, (path, names)


# ----------------------------------------------------------------------------- reference implementations
def test_numpy_reference_matches_numba_on_damaged_input():
    """Unsorted, repeated, NaN / inf / zero-error pixels, missing bands: same output bit for bit."""
    from benchmarks import bench_core as bc
    from csst_sls_z.preprocess import WaveGrid, preprocess_bands
    from csst_sls_z.products import BandData
    grid = WaveGrid(starts=(3800.0, 6100.0), steps=(7.1, 8.5), sizes=(395, 518))
    rng = np.random.default_rng(3)
    n = 40

    def band(k):
        ws, fs, es, offs, pres = [], [], [], [0], []
        for _ in range(n):
            pres.append(bool(rng.random() > 0.1))
            m = int(rng.integers(0, 400)) if pres[-1] else 0
            w = np.sort(rng.uniform(grid.starts[k] - 50, grid.starts[k] + grid.steps[k] * grid.sizes[k] + 50, m))
            if m > 10:
                if rng.random() < 0.3:
                    rng.shuffle(w)
                if rng.random() < 0.3:
                    w[3] = w[4]
                f, e = rng.normal(1, 1, m), rng.uniform(0.1, 2, m)
                if rng.random() < 0.5:
                    f[rng.integers(0, m)] = np.nan
                    e[rng.integers(0, m)] = 0.0
                    w[rng.integers(0, m)] = np.nan
                    e[rng.integers(0, m)] = np.inf
            else:
                f, e = rng.normal(1, 1, m), rng.uniform(0.1, 2, m)
            ws.append(w), fs.append(f), es.append(e), offs.append(offs[-1] + m)
        return BandData(np.concatenate(ws), np.concatenate(fs), np.concatenate(es), np.array(offs, np.int64),
                        np.array(pres))

    bands = {"GV": band(0), "GI": band(1)}
    pp = preprocess_bands(bands, grid, n)
    x, ok, snr, npix = bc.numpy_preprocess(bands, grid, n)
    assert np.array_equal(pp.valid, ok)
    np.testing.assert_allclose(pp.x, x, rtol=1e-6, atol=1e-6)
    for b in ("GV", "GI"):
        assert np.array_equal(pp.npix[b], npix[b])
        np.testing.assert_allclose(pp.snr[b], snr[b], rtol=1e-6)


def test_flop_count_of_the_paper_backbone():
    """About 1.0 GFLOP per spectrum forward for the paper's widths."""
    from benchmarks import bench_core as bc
    from csst_sls_z.network.config import CONFIGS
    flops = 2 * sum(bc.conv_macs(CONFIGS["paper"]).values())
    assert 0.95e9 < flops < 1.1e9
    assert 2 * sum(bc.conv_macs(CONFIGS["cpu"]).values()) < flops / 10


def test_resolution_matrix_for_r250():
    pytest.importorskip("scipy")
    from benchmarks import redrock_peer
    wave = 3800.0 + 7.1 * np.arange(395)
    r = redrock_peer.resolution_matrix(wave, 250.0)
    dense = r.toarray()
    np.testing.assert_allclose(dense.sum(axis=1), 1.0, atol=1e-12)
    # Row 200: a Gaussian of FWHM lambda / 250 in pixels.
    row = dense[200]
    d = np.arange(395) - 200
    sigma_pix = np.sqrt(np.sum(row * d ** 2))
    expect = wave[200] / 250.0 / 2.3548 / 7.1
    assert abs(sigma_pix / expect - 1) < 0.05
    z = redrock_peer.redshift_grid()
    assert z[0] == 0.0 and abs(z[-1] - 1.6) < 2e-3 and np.all(np.diff(z) > 0)
