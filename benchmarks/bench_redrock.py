"""The stage against the template-fitting peer (``redrock_peer.py``): speed and accuracy on the same spectra.

    python -m benchmarks redrock [--quick]

The stage runs in a fresh process (``bench_core.run_stage_subprocess``) on the workspace's
product of ``n_stage`` objects, with the set the accuracy comparisons use (the shipped one when
it holds a trained network, else the DUMMY ``cpu`` set, whose accuracy then means nothing). The
peer runs twice on the first ``n`` of those spectra, each time in a fresh interpreter without
TensorFlow and with one BLAS thread per process: with DESI's galaxy scan step and with a step
four times coarser. Speeds exclude one-time set-up (network build; template rebinning).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

log = logging.getLogger(__name__)

SNR_EDGES = (0.0, 1.0, 1.5, 2.0, 3.0, 5.0, 1e9)
SCANS = (("default", 3e-4), ("coarse", 1.2e-3))        # dlog10(1 + z): DESI's galaxy step, and 4x coarser


def accuracy_rows(z_pred, zwarn, z_true, snr_gi) -> list[dict]:
    """sigma_NMAD, eta and the ZWARN = 0 fraction, over all and by GI SNR bin."""
    from csst_sls_z.training.metrics import binned, outlier_fraction, sigma_nmad
    z_pred, z_true, snr_gi = (np.asarray(a, float) for a in (z_pred, z_true, snr_gi))
    good = (np.asarray(zwarn) == 0).astype(float)
    rows = [{"bin": "all", "n": int(z_true.size), "sigma_nmad": sigma_nmad(z_pred, z_true),
             "eta": outlier_fraction(z_pred, z_true), "f_zwarn0": float(good.mean()) if good.size else float("nan")}]
    s = binned(sigma_nmad, snr_gi, SNR_EDGES, z_pred, z_true)
    e = binned(outlier_fraction, snr_gi, SNR_EDGES, z_pred, z_true)
    f = binned(lambda g: float(np.mean(g)), snr_gi, SNR_EDGES, good)
    for bs, be, bf in zip(s, e, f):
        hi = "inf" if bs["hi"] > 1e8 else f"{bs['hi']:g}"
        rows.append({"bin": f"SNR_GI {bs['lo']:g}-{hi}", "n": bs["n"], "sigma_nmad": bs["value"],
                     "eta": be["value"], "f_zwarn0": bf["value"]})
    return rows


def read_truth(product):
    from astropy.io import fits
    with fits.open(product) as hdul:
        t = hdul["TRUTH"].data
        return np.asarray(t["OBJID"]), np.asarray(t["Z_TRUE"], float)


def read_catalog(path) -> dict:
    from astropy.io import fits
    with fits.open(path) as hdul:
        c = hdul["SLS_REDSHIFT"].data
        return {k: np.asarray(c[k]) for k in ("OBJID", "Z", "ZWARN", "SNR_GI")}


def run_peer_subprocess(product, out_json, n, procs, dlog10z) -> dict:
    """``redrock_peer.py`` in a fresh interpreter (no TensorFlow in it; one BLAS thread per process)."""
    cmd = [sys.executable, str(Path(__file__).with_name("redrock_peer.py")), str(product), "--out", str(out_json),
           "--n", str(n), "--procs", str(procs), "--dlog10z", repr(float(dlog10z))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"redrock peer failed: {proc.stderr.strip().splitlines()[-3:]}")
    for line in proc.stderr.strip().splitlines():
        if "WARNING" in line:
            log.warning("%s", line)
    return json.loads(Path(out_json).read_text())


def measure_against_redrock(ws, n: int, n_stage: int, n_warm: int, procs: int, samples: int = 200) -> dict:
    """The suite's benchmark (module doc); ``procs``: peer processes (0: every core)."""
    from benchmarks.bench_core import machine_info, run_stage_subprocess
    refdir, trained, label = ws.shipped_set()
    if not trained:
        label = f"DUMMY cpu set (untrained; shipped set {label} holds no network)"
        refdir = ws.dummy_set("cpu")
    product = ws.product(n_stage)
    work = ws.path("redrock")
    out = work / "stage_slsz.fits"
    stage = run_stage_subprocess([{"name": "stage", "product": product, "out": out, "refdir": refdir}], samples,
                                 warm=ws.product(n_warm, seed=101))["stage"]
    cat = read_catalog(out)
    n = min(n, n_stage)
    procs = procs or (os.cpu_count() or 1)
    objid_t, z_true = read_truth(product)
    truth = dict(zip(objid_t.tolist(), z_true.tolist()))
    machine = machine_info()
    cores = machine.get("cores_usable") or machine["cores"]
    rate = stage["spectra_per_s"]
    peers, stage_acc = {}, None
    row_of = {int(o): k for k, o in enumerate(cat["OBJID"])}
    for key, dlog in SCANS:
        log.info("redrock peer (%s scan, dlog10(1+z) = %g) on %d spectra, %d process(es)", key, dlog, n, procs)
        rr = run_peer_subprocess(product, work / f"redrock_{key}.json", n, procs, dlog)
        rr_obj = np.asarray(rr["objid"])
        zt_rr = np.array([truth[int(o)] for o in rr_obj])
        rows = np.array([row_of[int(o)] for o in rr_obj])
        snr_gi = cat["SNR_GI"][rows].astype(float)
        peers[key] = {"method": rr["method"], "is_redrock": rr["is_redrock"], "n": rr["n"], "procs": rr["procs"],
                      "dlog10z": dlog, "n_redshifts": rr["n_redshifts"], "setup_s": rr["setup_s"],
                      "fit_s": rr["fit_s"], "per_s": rr["spectra_per_s"],
                      "per_s_per_core": rr["spectra_per_s_per_core"],
                      "speed_ratio": rate / rr["spectra_per_s"],
                      "speed_ratio_per_core": (rate / cores) / rr["spectra_per_s_per_core"],
                      "accuracy": accuracy_rows(rr["z"], rr["zwarn"], zt_rr, snr_gi)}
        if stage_acc is None:
            stage_acc = accuracy_rows(cat["Z"][rows], cat["ZWARN"][rows], zt_rr, snr_gi)
    fastest = max(peers, key=lambda k: peers[k]["per_s"])
    return {"peers": peers, "fastest": fastest, "n": peers["default"]["n"],
            "is_redrock": all(p["is_redrock"] for p in peers.values()), "stage_set": label,
            "stage_trained": trained, "stage_per_s": rate, "stage_per_s_per_core": rate / cores,
            "stage_setup_s": stage["setup_s"], "speed_ratio": peers[fastest]["speed_ratio"],
            "stage_accuracy": stage_acc}
