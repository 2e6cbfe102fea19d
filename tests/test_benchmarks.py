"""The benchmark suite: ``benchmarks/run_all.py --quick`` runs and writes every section and row.

One quick run (tiny sizes, in a subprocess) is shared by the tests below; its numbers are
not checked for speed, only for being there and for the internal consistency checks the
suite makes (numba vs numpy agree, both BNN paths agree, FLOP counts agree).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"

SECTIONS = ["# csst_sls_z performance results", "## Machine", "## Yardstick: dense matmul", "## Preprocessing",
            "## Backbone", "## BNN sampling", "## End to end", "## Simulation", "## Against redrock", "## Targets"]
ROWS = [
    "| CPU |", "| cores (usable) |", "| memory |", "| versions |",
    "| TensorFlow float32 matmul", "| numpy float32 matmul",
    "| numba (`preprocess_bands`", "| plain numpy (`bench_core.numpy_preprocess`", "| numba speed-up over numpy |",
    "| numba and numpy agree",
    "| cpu |", "| paper |",
    "| backbone once,", "| S full passes, compiled,", "| S full passes, `Sampler.predict_naive`,",
    "| time ratio, same spectra", "| time ratio, production throughput", "| largest difference of the means",
    "Peak RSS ratio", "| preprocess | backbone | BNN head",
    "| simulate_arrays,", "| simulate_products,",
    "| spectra/s (all cores) |", "| spectra/s per core |", "| speed ratio stage / redrock |",
    "| speed ratio per core |", "| all |", "| SNR_GI 0-1 |", "| SNR_GI 5-inf |",
    "The paper's \"about 1% for traditional template fitting\"",
    "| end to end >= 2,000 spectra/s |", "| end to end >= 1,500 spectra/s (progress) |",
    "| BNN head cheaper than the backbone per spectrum |", "| BNN >= 50x faster than S full passes |",
    "| >= 150x faster than redrock's DESI scan |", "| backbone >= 50% of matmul FLOP/s |",
    "With `--backbone-precision bfloat16`", "Compute floor: the network's multiply-adds per spectrum",
]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "perf.md"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--quick", "--out", str(out),
                           "--workdir", str(tmp / "work")], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out.read_text(), json.loads(out.with_suffix(".json").read_text())


@pytest.mark.slow
def test_every_section_and_row(quick):
    text, res = quick
    for heading in SECTIONS:
        assert f"\n{heading}\n" in f"\n{text}\n", heading
    for row in ROWS:
        assert row in text, row
    assert "QUICK MODE" in text
    assert res["quick"] is True
    # The targets table has a verdict on every line, labelled as no verdict in quick mode.
    targets = text.split("## Targets", 1)[1]
    assert targets.count("(quick mode: not a verdict)") == 6


@pytest.mark.slow
def test_internal_checks(quick):
    _, res = quick
    assert res["preprocess"]["agree"] is True
    bnn = res["bnn"]
    assert bnn["samples"] == 200 and bnn["n_naive"] >= 1
    assert bnn["max_dmean_over_sigma"] < 1e-3          # backbone once == S full passes, same noise
    cpu = res["backbone"]["cpu"]
    assert abs(cpu["profiler_flops"] / cpu["flops_per_spectrum"] - 1) < 0.02
    assert cpu["keras_per_s"] > 0 and cpu["bfloat16_per_s"] > 0
    # S = 200 head samples on 128 features, units 256 and 128: (128*256 + 2*256*128 + 128*2) MACs each
    assert res["flops_per_spectrum"]["head"] == 2 * (128 * 256 + 200 * (128 * 256 + 2 * 256 * 128 + 128 * 2))
    assert res["e2e"]["bfloat16"]["n"] == res["sizes"]["n_e2e"]
    e2e = res["e2e"]
    assert e2e["small"]["n"] == res["sizes"]["n_e2e"] and e2e["large"]["n"] == res["sizes"]["n_mem"]
    assert e2e["small"]["status"] in ("PERFECT", "WARNING") and e2e["large"]["maxrss_mib"] > 0
    assert 0 < e2e["small"]["vmhwm_mib"] <= e2e["large"]["vmhwm_mib"]
    for key in ("tf_gflops", "numpy_gflops"):
        assert res["matmul"][key] > 0


@pytest.mark.slow
def test_redrock_section(quick):
    pytest.importorskip("redrock")
    text, res = quick
    rr = res["redrock"]
    assert rr["is_redrock"] is True
    assert rr["n"] == min(res["sizes"]["n_rr"], res["sizes"]["n_e2e"])
    assert set(rr["peers"]) == {"default", "coarse"} and rr["speed_ratio"] > 0
    for peer in rr["peers"].values():
        assert peer["method"].startswith("redrock ") and peer["per_s"] > 0 and peer["n"] == rr["n"]
        assert len(peer["accuracy"]) == 7
    assert rr["peers"]["coarse"]["n_redshifts"] < rr["peers"]["default"]["n_redshifts"]
    assert len(rr["stage_accuracy"]) == 7
    assert "REDROCK COULD NOT BE IMPORTED" not in text
    if not rr["stage_trained"]:
        assert "untrained DUMMY network" in text


# ----------------------------------------------------------------------------- fast unit checks
def _bench_core():
    sys.path.insert(0, str(BENCH))
    import bench_core
    return bench_core


def test_numpy_reference_matches_numba_on_damaged_input():
    """Unsorted, repeated, NaN / inf / zero-error pixels, missing bands: same output bit for bit."""
    bc = _bench_core()
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
    bc = _bench_core()
    from csst_sls_z.network.config import CONFIGS
    flops = 2 * sum(bc.conv_macs(CONFIGS["paper"]).values())
    assert 0.95e9 < flops < 1.1e9
    assert 2 * sum(bc.conv_macs(CONFIGS["cpu"]).values()) < flops / 10


def test_resolution_matrix_for_r250():
    pytest.importorskip("scipy")
    sys.path.insert(0, str(BENCH))
    import redrock_peer
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


@pytest.mark.slow
def test_memory_benchmark_runs_tiny(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, str(BENCH / "bench_memory.py"), "--sizes", "30,60", "--samples", "4",
                           "--warm", "20", "--workdir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| full") or line.startswith("| catalogue")]
    assert len(rows) == 4
    for row in rows:
        anon, file_backed = (float(c.replace(",", "")) for c in row.split("|")[4:6])
        assert anon > 50 and file_backed > 0               # TensorFlow alone is well over 50 MiB
    assert (tmp_path / "out_catalog_60.fits").exists() and (tmp_path / "out_full_60.fits").exists()
