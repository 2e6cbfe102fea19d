"""Every csst_sls_z benchmark in one run, written as one markdown results table (+ JSON).

    python benchmarks/run_all.py --out docs/performance_results.md            # full size
    python benchmarks/run_all.py --out /tmp/perf_quick.md --quick             # seconds; a smoke check

Sections (each ratio is measured inside this one run, on this machine):
machine; dense-matmul yardstick (TensorFlow, 4096 x 4096 float32); preprocessing (numba vs
plain numpy, and their agreement); backbone (spectra/s, FLOPs per spectrum, fraction of the
matmul rate) for the ``cpu`` and ``paper`` configurations; BNN sampling (S = 200, backbone
once vs S full passes); end to end (FITS in -> FITS out, 10,000 objects, peak RSS, and
peak RSS at 100,000 objects); simulation (``bench_simulation.py``); against Redrock (speed
and accuracy on the same spectra, ``redrock_peer.py``); and the targets, with pass / miss.

The speed benchmarks use a DUMMY reference set of the ``cpu`` network (untrained weights
cost what trained ones cost). The accuracy comparison uses the shipped reference set when
it holds a network, else the DUMMY one, and then says its accuracy numbers mean nothing.
``--quick`` runs everything at tiny sizes: its numbers say the code works, not how fast.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

TARGETS = {
    "e2e": 2000.0,         # spectra/s, cpu config, S = 200, 2 cores (issue 17)
    "e2e_progress": 1500.0,  # issue 17: "a bar at 1,500 counts as progress"
    "bnn": 50.0,           # x faster than S full passes
    "redrock": 150.0,      # x faster than redrock's DESI scan (issue 17)
    "backbone": 0.50,      # fraction of the measured dense-matmul FLOP/s
}

FULL = {"matmul_n": 4096, "n_pre": 4096, "n_backbone": 2048, "n_bnn": 2048, "n_naive": 64,
        "n_e2e": 10000, "n_mem": 100000, "n_warm": 600, "n_rr": 1000, "n_sim": 10000, "n_sim_mem": 10000,
        "profile_paper": True}
QUICK = {"matmul_n": 1024, "n_pre": 100, "n_backbone": 32, "n_bnn": 32, "n_naive": 4,
         "n_e2e": 100, "n_mem": 300, "n_warm": 20, "n_rr": 6, "n_sim": 100, "n_sim_mem": 100,
         "profile_paper": False}
SAMPLES = 200
SNR_EDGES = (0.0, 1.0, 1.5, 2.0, 3.0, 5.0, 1e9)


def log(msg):
    print(f"[run_all {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fmt(v, nd=3):
    if v is None:
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "NO"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.{max(nd - 1, 1)}f}"
    return f"{v:.{nd}g}"


def verdict(ok: bool, quick: bool) -> str:
    return ("pass" if ok else "MISS") + (" (quick mode: not a verdict)" if quick else "")


# ----------------------------------------------------------------------------- reference sets
def stage_reference(explicit=None):
    """(directory, is_trained, label) of the set the accuracy comparison should use."""
    from csst_sls_z.reffiles.sets import read_manifest, resolve_reference_dir
    try:
        d = resolve_reference_dir(explicit)
        man = read_manifest(d)
    except Exception as exc:                  # no shipped set at all
        return None, False, f"no usable reference set ({exc})"
    types = {f.get("reftype") for f in man.get("files", [])}
    need = {"backbone", "bnnhead", "calibration", "thresholds", "wavegrid"}
    trained = need <= types and man.get("pedigree", "").upper() != "DUMMY"
    return d, trained, f"{man.get('set_id', d.name)} (pedigree {man.get('pedigree', '?')})"


# ----------------------------------------------------------------------------- accuracy
def accuracy_rows(z_pred, zwarn, z_true, snr_gi):
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


def read_truth(product, n=None):
    from astropy.io import fits
    with fits.open(product) as hdul:
        t = hdul["TRUTH"].data
        objid, z = np.asarray(t["OBJID"]), np.asarray(t["Z_TRUE"], float)
    return (objid, z) if n is None else (objid[:n], z[:n])


def read_catalog(path):
    from astropy.io import fits
    with fits.open(path) as hdul:
        c = hdul["SLS_REDSHIFT"].data
        return {k: np.asarray(c[k]) for k in ("OBJID", "Z", "ZWARN", "SNR_GI")}


def run_peer_subprocess(product, out_json, n, procs, dlog10z) -> dict:
    """benchmarks/redrock_peer.py in a fresh interpreter (no TensorFlow in it; one BLAS thread per process)."""
    cmd = [sys.executable, str(HERE / "redrock_peer.py"), str(product), "--out", str(out_json), "--n", str(n),
           "--procs", str(procs), "--dlog10z", repr(float(dlog10z))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"redrock peer failed: {proc.stderr.strip().splitlines()[-3:]}")
    for line in proc.stderr.strip().splitlines():
        if "WARNING" in line:
            log(line)
    return json.loads(Path(out_json).read_text())


# ----------------------------------------------------------------------------- the run
def run(args) -> dict:
    quick = args.quick
    size = dict(QUICK if quick else FULL)
    for key in ("n_e2e", "n_mem", "n_rr"):
        if getattr(args, key, None):
            size[key] = getattr(args, key)
    res = {"quick": quick, "sizes": size, "samples": SAMPLES,
           "started": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
           "command": "python benchmarks/run_all.py " + " ".join(args.argv)}
    import bench_core as bc
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="csst_sls_z_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    res["machine"] = bc.machine_info()
    t_all = time.perf_counter()

    # --- products (no TensorFlow needed)
    from csst_sls_z.reffiles.tables import grid_from_instrument
    from csst_sls_z.simulation import load_models, simulate_products
    instrument, sedlib, _ = load_models()
    grid = grid_from_instrument(instrument)
    products = {}
    sim_rates = {}
    for key, n, seed in (("warm", size["n_warm"], 101), ("e2e", size["n_e2e"], 102), ("mem", size["n_mem"], 103)):
        d = work / f"in_{key}_{n}"                          # keyed by size: a reused workdir stays right
        d.mkdir(exist_ok=True)
        existing = sorted(d.glob("*.fits"))
        if existing:
            products[key] = existing[0]
            continue
        log(f"simulating the {key} product ({n:,} objects)")
        t0 = time.perf_counter()
        (products[key],) = simulate_products(n, seed, "test", n, d, instrument, sedlib, progress=False,
                                             overwrite=True)
        sim_rates[key] = n / (time.perf_counter() - t0)
    res["product_sim_rates"] = sim_rates

    # --- the DUMMY cpu set for the speed runs
    from csst_sls_z.training.dummy import write_dummy_set
    dummy = work / "refs_dummy_cpu"
    if not (dummy / "manifest.json").is_file():
        log("writing the DUMMY cpu reference set")
        write_dummy_set(dummy, network="cpu")

    # --- yardstick
    log(f"matmul {size['matmul_n']}^2")
    res["matmul"] = bc.bench_matmul(size["matmul_n"], repeats=5 if not quick else 2)

    # --- preprocessing
    log("preprocessing: numba vs numpy")
    res["preprocess"] = bc.bench_preprocess(products["e2e"], grid, n_max=size["n_pre"], repeats=3 if not quick else 1)

    # --- backbone
    res["backbone"] = {}
    for net in ("cpu", "paper"):
        log(f"backbone {net}")
        b = bc.bench_backbone(net, size["n_backbone"], input_length=grid.length, repeats=3 if not quick else 1,
                              with_profiler=(net == "cpu" or size["profile_paper"]))
        b["fraction_of_matmul"] = b["achieved_gflops"] / res["matmul"]["tf_gflops"]
        res["backbone"][net] = b

    # --- BNN
    log(f"BNN: S={SAMPLES}, backbone once vs S full passes on {size['n_naive']} spectra")
    bands, n_b, _ = bc.read_product_bands(products["e2e"], size["n_bnn"])
    from csst_sls_z.preprocess import preprocess_bands
    x = preprocess_bands(bands, grid, n_b).x
    res["bnn"] = bc.bench_bnn(dummy, x, size["n_naive"], SAMPLES, repeats=2 if not quick else 1, eager=not quick)
    from dataclasses import replace as _replace
    from csst_sls_z.network.config import CONFIGS
    cpu_cfg = _replace(CONFIGS["cpu"], input_length=grid.length)
    res["flops_per_spectrum"] = {"backbone": res["backbone"]["cpu"]["flops_per_spectrum"],
                                 "head": 2.0 * sum(bc.head_macs(cpu_cfg, SAMPLES).values())}

    # --- end to end: one fresh process, the stage on the e2e product then on the larger one
    refdir, trained, label = stage_reference(args.reference_dir)
    out_dir = work / "out"
    out_dir.mkdir(exist_ok=True)
    jobs = [{"name": "e2e", "product": products["e2e"], "out": out_dir / "e2e_slsz.fits", "refdir": dummy},
            {"name": "mem", "product": products["mem"], "out": out_dir / "mem_slsz.fits", "refdir": dummy},
            {"name": "e2e_bf16", "product": products["e2e"], "out": out_dir / "e2e_bf16_slsz.fits", "refdir": dummy,
             "precision": "bfloat16"}]
    if trained:       # the accuracy comparison: the same spectra through the shipped trained set
        jobs.append({"name": "compare", "product": products["e2e"], "out": out_dir / "compare_slsz.fits",
                     "refdir": refdir})
        # the trained set end to end with its template refinement (if it has one) and without
        jobs.append({"name": "compare_norefine", "product": products["e2e"],
                     "out": out_dir / "compare_norefine_slsz.fits", "refdir": refdir, "no_refine": True})
    log(f"end to end: stage on {size['n_e2e']:,} then {size['n_mem']:,} objects"
        f"{' then the trained set' if trained else ''} (one subprocess)")
    stage_runs = bc.run_stage_subprocess(jobs, SAMPLES, warm=products["warm"])
    if trained:
        res["e2e_refine"] = {"refined": stage_runs["compare"], "network_only": stage_runs["compare_norefine"],
                             "set": label}
    res["e2e"] = {"small": stage_runs["e2e"], "large": stage_runs["mem"], "bfloat16": stage_runs["e2e_bf16"],
                  "process_wall_s": stage_runs["process_wall_s"],
                  "children_maxrss_mib": stage_runs["children_maxrss_mib"]}

    # --- simulation (bench_simulation.py, called, not copied)
    log("simulation (bench_simulation.run)")
    import bench_simulation
    res["simulation"] = {"rows": bench_simulation.run(size["n_sim"], size["n_sim_mem"])}

    # --- against redrock
    rr_product = products["e2e"]
    n_rr = min(size["n_rr"], size["n_e2e"])
    if trained:
        cat = read_catalog(out_dir / "compare_slsz.fits")
        stage_rate = stage_runs["compare"]["spectra_per_s"]
    else:
        label = f"DUMMY cpu set (untrained; shipped set {label} holds no network)"
        cat = read_catalog(out_dir / "e2e_slsz.fits")
        stage_rate = stage_runs["e2e"]["spectra_per_s"]
    procs = args.rr_procs or (1 if quick else (os.cpu_count() or 1))
    objid_t, z_true = read_truth(rr_product)
    truth = dict(zip(objid_t.tolist(), z_true.tolist()))
    cores = res["machine"].get("cores_usable") or res["machine"]["cores"]
    peers = {}
    for key, dlog in (("default", 3e-4), ("coarse", 1.2e-3)):
        log(f"redrock peer ({key} scan, dlog10(1+z) = {dlog:g}) on {n_rr} spectra, {procs} process(es)")
        rr = run_peer_subprocess(rr_product, work / f"redrock_{key}.json", n_rr, procs, dlog)
        rr_obj = np.asarray(rr["objid"])
        zt_rr = np.array([truth[int(o)] for o in rr_obj])
        row_of = {int(o): k for k, o in enumerate(cat["OBJID"])}
        rows = np.array([row_of[int(o)] for o in rr_obj])
        snr_gi = cat["SNR_GI"][rows].astype(float)
        peers[key] = {"method": rr["method"], "is_redrock": rr["is_redrock"], "n": rr["n"], "procs": rr["procs"],
                      "dlog10z": dlog, "n_redshifts": rr["n_redshifts"], "setup_s": rr["setup_s"],
                      "fit_s": rr["fit_s"], "per_s": rr["spectra_per_s"],
                      "per_s_per_core": rr["spectra_per_s_per_core"],
                      "speed_ratio": stage_rate / rr["spectra_per_s"],
                      "speed_ratio_per_core": (stage_rate / cores) / rr["spectra_per_s_per_core"],
                      "accuracy": accuracy_rows(rr["z"], rr["zwarn"], zt_rr, snr_gi)}
        if key == "default":
            stage_acc = accuracy_rows(cat["Z"][rows], cat["ZWARN"][rows], zt_rr, snr_gi)
    fastest = max(peers, key=lambda k: peers[k]["per_s"])
    res["redrock"] = {"peers": peers, "fastest": fastest, "n": peers["default"]["n"],
                      "is_redrock": all(p["is_redrock"] for p in peers.values()),
                      "stage_set": label, "stage_trained": trained, "stage_per_s": stage_rate,
                      "stage_per_s_per_core": stage_rate / cores,
                      "speed_ratio": peers[fastest]["speed_ratio"], "stage_accuracy": stage_acc}
    res["wall_s"] = time.perf_counter() - t_all
    res["machine"]["load_1min_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return res


# ----------------------------------------------------------------------------- the table
def breakdown(res) -> dict:
    """Milliseconds per spectrum of each part, from the separate measurements of this run."""
    pre = 1e3 / res["preprocess"]["numba_per_s"]
    bb = 1e3 / res["backbone"]["cpu"]["spectra_per_s"]
    bnn = 1e3 / res["bnn"]["once_per_s"]
    e2e = 1e3 / res["e2e"]["small"]["spectra_per_s"]
    out = {"preprocess": pre, "backbone": bb, "head": max(bnn - bb, 0.0), "bnn_total": bnn,
           "io_and_rest": max(e2e - pre - bnn, 0.0), "e2e": e2e}
    flops = res.get("flops_per_spectrum")
    if flops:       # the network's multiply-adds at the dense-matmul rate: no float32 code beats it
        out["floor"] = 1e3 * (flops["backbone"] + flops["head"]) / (res["matmul"]["tf_gflops"] * 1e9)
    return out


def markdown(res) -> str:
    q = res["quick"]
    m = res["machine"]
    L = []
    L.append("# csst_sls_z performance results")
    L.append("")
    if q:
        L.append("> **QUICK MODE** (`--quick`): every benchmark ran at a tiny size to show that it works. "
                 "These numbers are meaningless for the targets; run without `--quick` for real ones.")
        L.append("")
    L.append(f"Command: `{res['command']}`  ")
    L.append(f"Started {res['started']}; whole run {res['wall_s']:.0f} s. BNN samples S = {res['samples']}.")
    L.append("")
    L.append("## Machine")
    L.append("")
    L.append("| quantity | value |")
    L.append("|---|---|")
    L.append(f"| CPU | {m['cpu']} |")
    L.append(f"| cores (usable) | {m['cores']} ({m.get('cores_usable', m['cores'])}) |")
    L.append(f"| memory | {m.get('memory_gib', '?')} GiB |")
    L.append(f"| versions | Python {m['python']}, numpy {m['numpy']}, numba {m['numba']}, TensorFlow "
             f"{m['tensorflow']}, redrock {m['redrock']} |")
    L.append(f"| 1-min load average, start / end | {m['load_1min']} / {m.get('load_1min_end')} |")
    L.append("")

    mm = res["matmul"]
    L.append("## Yardstick: dense matmul")
    L.append("")
    L.append("| quantity | value |")
    L.append("|---|---|")
    L.append(f"| TensorFlow float32 matmul {mm['n']}x{mm['n']} | {fmt(mm['tf_gflops'])} GFLOP/s |")
    L.append(f"| numpy float32 matmul {mm['n']}x{mm['n']} | {fmt(mm['numpy_gflops'])} GFLOP/s |")
    L.append(f"| TensorFlow threads (intra / inter, 0 = default) | {mm['tf_intra_threads']} / "
             f"{mm['tf_inter_threads']} |")
    L.append("")

    pp = res["preprocess"]
    L.append("## Preprocessing")
    L.append("")
    L.append(f"Resample GV + GI onto the network grid and normalise, {pp['n']:,} spectra read from a product "
             "(in memory).")
    L.append("")
    L.append("| quantity | value |")
    L.append("|---|---|")
    L.append(f"| numba (`preprocess_bands`, {pp['numba_threads']} threads) | {fmt(pp['numba_per_s'])} spectra/s |")
    L.append(f"| plain numpy (`bench_core.numpy_preprocess`, vectorised) | {fmt(pp['numpy_per_s'])} spectra/s |")
    L.append(f"| numba speed-up over numpy | {fmt(pp['speedup'])}x |")
    L.append(f"| numba and numpy agree (masks, NPIX, SNR exactly; x to 1e-5) | {fmt(pp['agree'])} "
             f"(max abs difference {pp['max_abs_diff']:.3g}) |")
    L.append("")

    L.append("## Backbone")
    L.append("")
    L.append("Inference, batch 256, data in memory. FLOPs = 2 x the conv / dense multiply-accumulates counted "
             "from the configuration at input length 913 (BatchNorm, ReLU, adds, pooling not counted); "
             "TensorFlow's profiler count of the frozen graph beside it. spectra/s: as the stage runs it "
             "(`FrozenBackbone`: BatchNorm folded into the convolutions, float32); beside it the Keras model it "
             "is made from and the bfloat16 option (`--backbone-precision bfloat16`), alternated in this run.")
    L.append("")
    L.append("| network | parameters | spectra/s | Keras model | bfloat16 | MFLOP / spectrum (analytic) | "
             "MFLOP (TF profiler) | achieved GFLOP/s | fraction of matmul |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for net in ("cpu", "paper"):
        b = res["backbone"][net]
        prof = f"{b['profiler_flops'] / 1e6:,.1f}" if "profiler_flops" in b else "not run (quick)"
        L.append(f"| {net} | {b['params']:,} | {fmt(b['spectra_per_s'])} | {fmt(b['keras_per_s'])} | "
                 f"{fmt(b['bfloat16_per_s'])} | {b['flops_per_spectrum'] / 1e6:,.1f} | "
                 f"{prof} | {fmt(b['achieved_gflops'])} | {b['fraction_of_matmul']:.0%} |")
    L.append("")

    bn = res["bnn"]
    L.append("## BNN sampling")
    L.append("")
    L.append(f"cpu network (DUMMY weights), S = {bn['samples']}; the same {bn['n_naive']} spectra and the same "
             "noise through `Sampler.predict` (backbone once, head S times) and S full passes (backbone + one "
             "head sample each): compiled (`bench_core.compiled_naive`, one `tf.function` call per pass; the "
             "headline) and as shipped (`Sampler.predict_naive`, eager head calls).")
    L.append("")
    L.append("| quantity | value |")
    L.append("|---|---|")
    L.append(f"| backbone once, {bn['n_naive']} spectra | {fmt(bn['once_per_s_same_n'])} spectra/s |")
    L.append(f"| S full passes, compiled, {bn['n_naive']} spectra | {fmt(bn['naive_per_s'])} spectra/s |")
    eager = (f"{fmt(bn['naive_eager_per_s'])} spectra/s (ratio {fmt(bn['ratio_same_n_eager'])}x)"
             if bn["eager_checked"] else "not run (quick)")
    L.append(f"| S full passes, `Sampler.predict_naive`, {bn['n_naive']} spectra | {eager} |")
    L.append(f"| time ratio, same spectra (compiled full passes / backbone once) | {fmt(bn['ratio_same_n'])}x |")
    L.append(f"| backbone once, {bn['n_all']:,} spectra (production batches) | {fmt(bn['once_per_s'])} spectra/s |")
    L.append(f"| time ratio, production throughput vs S full passes | {fmt(bn['ratio_throughput'])}x |")
    L.append(f"| largest difference of the means (max abs dmean / sigma) | {bn['max_abs_dmean']:.3g} "
             f"({bn['max_dmean_over_sigma']:.3g}) |")
    L.append("")

    e, g = res["e2e"]["small"], res["e2e"]["large"]
    L.append("## End to end")
    L.append("")
    L.append("The stage (`RedshiftStage.run`, FITS in -> FITS out, cpu network, DUMMY weights, "
             f"S = {res['samples']}, chunk 4096) in one fresh process: set-up (TensorFlow import, reference files, "
             "network build, a warm-up run on a small product), then the first product, then the larger one. "
             "Peak RSS: the process's own peak so far after each product (`VmHWM`; `ru_maxrss` beside it): memory "
             "that grew with the file would show as a rise.")
    L.append("")
    L.append("| objects | spectra/s | run (s) | peak RSS after it, VmHWM (MiB) | ru_maxrss (MiB) |")
    L.append("|---|---|---|---|---|")
    for r in (e, g):
        L.append(f"| {r['n']:,} | {fmt(r['spectra_per_s'])} | {r['run_s']:.1f} | {r['vmhwm_mib']:,.0f} | "
                 f"{r['maxrss_mib']:,.0f} |")
    L.append("")
    bf = res["e2e"]["bfloat16"]
    L.append(f"With `--backbone-precision bfloat16` (a stage of its own in the same process, after the two above), "
             f"{bf['n']:,} objects: {fmt(bf['spectra_per_s'])} spectra/s, {bf['spectra_per_s'] / e['spectra_per_s']:.2f}x "
             "the float32 run on the same file. It changes the numbers (docs/performance.md, \"bfloat16 backbone\").")
    L.append("")
    if "e2e_refine" in res:
        rr = res["e2e_refine"]
        L.append(f"The trained set {rr['set']} end to end on the same {rr['refined']['n']:,} objects: "
                 f"{fmt(rr['refined']['spectra_per_s'])} spectra/s as it ships (with its template refinement, "
                 f"where it has a refinement file), {fmt(rr['network_only']['spectra_per_s'])} with `--no-refine` "
                 f"({rr['refined']['spectra_per_s'] / rr['network_only']['spectra_per_s']:.2f}x).")
        L.append("")
    ee = res["e2e"]
    L.append(f"Set-up {e['setup_s']:.1f} s; whole process {ee['process_wall_s']:.1f} s "
             f"({(e['n'] + g['n']) / ee['process_wall_s']:,.0f} spectra/s with start-up). Peak RSS ratio "
             f"{g['n']:,} / {e['n']:,} objects: {g['vmhwm_mib'] / e['vmhwm_mib']:.2f} (flat = 1). "
             f"`RUSAGE_CHILDREN` after the process: {ee['children_maxrss_mib']:,.0f} MiB (on Linux a ceiling that "
             "also holds this benchmark process's own peak, carried across execve; not the stage's peak).")
    L.append("")
    bd = breakdown(res)
    L.append("Where the time goes (ms per spectrum, from this run's separate measurements):")
    L.append("")
    L.append("| preprocess | backbone | BNN head (S samples) | I/O, quality, calibration, rest | end to end |")
    L.append("|---|---|---|---|---|")
    L.append(f"| {bd['preprocess']:.3f} | {bd['backbone']:.3f} | {bd['head']:.3f} | {bd['io_and_rest']:.3f} | "
             f"{bd['e2e']:.3f} |")
    L.append("")
    if "floor" in bd:
        fl = res["flops_per_spectrum"]
        L.append(f"Compute floor: the network's multiply-adds per spectrum, backbone {fl['backbone'] / 1e6:.1f} + "
                 f"head {fl['head'] / 1e6:.1f} MFLOP at S = {res['samples']} (`bench_core.conv_macs`, `head_macs`), "
                 f"at this run's dense-matmul rate ({fmt(res['matmul']['tf_gflops'])} GFLOP/s) take "
                 f"{bd['floor']:.3f} ms: no float32 code on this machine exceeds {1.0 / bd['floor'] * 1e3:,.0f} "
                 f"spectra/s end to end, and the stage runs at {bd['floor'] / bd['e2e']:.0%} of that.")
        L.append("")

    L.append("## Simulation")
    L.append("")
    L.append("From `benchmarks/bench_simulation.py` (its `run()`), same run:")
    L.append("")
    L.append("| quantity | value |")
    L.append("|---|---|")
    for qn, v in res["simulation"]["rows"]:
        L.append(f"| {qn} | {v} |")
    for k, v in res.get("product_sim_rates", {}).items():
        L.append(f"| simulate_products for this run's {k} product | {v:,.0f} objects/s |")
    L.append("")
    L.append("bench_simulation's peak-RSS rows are the `VmHWM` of a fresh child process: its own peak, "
             "not the caller's.")
    L.append("")

    rr = res["redrock"]
    pd, pc = rr["peers"]["default"], rr["peers"]["coarse"]
    L.append("## Against redrock")
    L.append("")
    if not rr["is_redrock"]:
        L.append("> **REDROCK COULD NOT BE IMPORTED: the peer below is the in-repo chi-square template fit "
                 "(training/evaluate.py), not redrock.**")
        L.append("")
    L.append(f"Peer: {pd['method']} over z 0-1.6, {pd['procs']} process(es) (`benchmarks/redrock_peer.py`), twice: "
             f"with DESI's galaxy scan step dlog10(1+z) = {pd['dlog10z']:g} ({pd['n_redshifts']} trial redshifts) and "
             f"with a step {pc['dlog10z'] / pd['dlog10z']:g}x coarser ({pc['n_redshifts']}), still finer than an "
             f"R = 250 resolution element. Stage: {rr['stage_set']}. All on the same {rr['n']:,} spectra. "
             "Speeds exclude one-time set-up (network build; template rebinning).")
    if not rr["stage_trained"]:
        L.append("")
        L.append("> The stage ran with an **untrained DUMMY network**: its accuracy numbers below are meaningless; "
                 "only redrock's are real.")
    L.append("")
    L.append("| quantity | stage | redrock, DESI scan | redrock, coarse scan |")
    L.append("|---|---|---|---|")
    L.append(f"| spectra/s (all cores) | {fmt(rr['stage_per_s'])} | {fmt(pd['per_s'])} | {fmt(pc['per_s'])} |")
    L.append(f"| spectra/s per core | {fmt(rr['stage_per_s_per_core'])} | {fmt(pd['per_s_per_core'])} | "
             f"{fmt(pc['per_s_per_core'])} |")
    L.append(f"| one-time set-up (s) | {e['setup_s']:.1f} | {pd['setup_s']:.1f} | {pc['setup_s']:.1f} |")
    L.append(f"| speed ratio stage / redrock | | {fmt(pd['speed_ratio'])}x | {fmt(pc['speed_ratio'])}x |")
    L.append(f"| speed ratio per core | | {fmt(pd['speed_ratio_per_core'])}x | {fmt(pc['speed_ratio_per_core'])}x |")
    L.append("")
    L.append("Accuracy on the same spectra (SNR_GI from the stage's catalogue; eta: |dz|/(1+z) > 0.02; "
             "ZWARN = 0: each method's own flags):")
    L.append("")
    L.append("| sample | n | stage sigma_NMAD / eta / ZWARN=0 | redrock DESI scan | redrock coarse scan |")
    L.append("|---|---|---|---|---|")

    def trio(r):
        return f"{fmt(r['sigma_nmad'], 3)} / {fmt(r['eta'], 3)} / {fmt(r['f_zwarn0'], 3)}"
    for a_, b_, c_ in zip(rr["stage_accuracy"], pd["accuracy"], pc["accuracy"]):
        L.append(f"| {a_['bin']} | {a_['n']:,} | {trio(a_)} | {trio(b_)} | {trio(c_)} |")
    L.append("")
    allrr = pd["accuracy"][0]
    L.append(f"The paper's \"about 1% for traditional template fitting\", measured here: redrock sigma_NMAD "
             f"{fmt(allrr['sigma_nmad'], 3)}, eta {fmt(allrr['eta'], 3)} on {allrr['n']:,} spectra"
             f"{' (quick mode: too few to mean anything)' if q else ''}.")
    L.append("")

    L.append("## Targets")
    L.append("")
    L.append("cpu network, S = 200, this machine.")
    L.append("")
    L.append("| target | measured | verdict | if missed, why |")
    L.append("|---|---|---|---|")
    b = res["backbone"]["cpu"]
    share = (f"largest share: {max(('preprocess', 'backbone', 'head', 'io_and_rest'), key=lambda k: bd[k])} "
             f"({max(bd['preprocess'], bd['backbone'], bd['head'], bd['io_and_rest']):.2f} of {bd['e2e']:.2f} "
             "ms/spectrum, table above)")
    floor = f"; the float32 compute floor is {1e3 / bd['floor']:,.0f} spectra/s" if "floor" in bd else ""
    checks = [
        (f"end to end >= {TARGETS['e2e']:,.0f} spectra/s", f"{fmt(e['spectra_per_s'])} spectra/s",
         e["spectra_per_s"] >= TARGETS["e2e"], share + floor),
        (f"end to end >= {TARGETS['e2e_progress']:,.0f} spectra/s (progress)", f"{fmt(e['spectra_per_s'])} spectra/s; "
         f"bfloat16 backbone {fmt(res['e2e']['bfloat16']['spectra_per_s'])}", e["spectra_per_s"] >= TARGETS["e2e_progress"],
         share + floor),
        ("BNN head cheaper than the backbone per spectrum", f"head {bd['head']:.3f} ms, backbone {bd['backbone']:.3f} ms",
         bd["head"] < bd["backbone"], "the head's S samples are three (S N, 128-256) matmuls per layer pair"),
        ("BNN >= 50x faster than S full passes", f"{fmt(bn['ratio_same_n'])}x", bn["ratio_same_n"] >= TARGETS["bnn"],
         f"bounded by S(b+h)/(b+Sh): backbone {bd['backbone']:.3f} ms vs head x S {bd['head']:.3f} ms per spectrum"),
        (f">= {TARGETS['redrock']:.0f}x faster than redrock's DESI scan", f"{fmt(pd['speed_ratio'])}x (coarse scan "
         f"{fmt(pc['speed_ratio'])}x)", pd["speed_ratio"] >= TARGETS["redrock"],
         f"redrock {fmt(pd['per_s'])} spectra/s on {pd['procs']} process(es) vs the stage's "
         f"{fmt(rr['stage_per_s'])}: the stage would need {TARGETS['redrock'] * pd['per_s']:,.0f} spectra/s"),
        ("backbone >= 50% of matmul FLOP/s", f"{b['fraction_of_matmul']:.0%} ({fmt(b['achieved_gflops'])} of "
         f"{fmt(res['matmul']['tf_gflops'])} GFLOP/s)", b["fraction_of_matmul"] >= TARGETS["backbone"],
         f"narrow convolutions (16-128 channels) run below GEMM efficiency; the paper widths reach "
         f"{res['backbone']['paper']['fraction_of_matmul']:.0%}"),
    ]
    for name, meas, ok, why in checks:
        L.append(f"| {name} | {meas} | {verdict(ok, q)} | {'' if ok else why} |")
    L.append("")
    return "\n".join(L)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="markdown results file (a .json beside it)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: seconds; numbers meaningless")
    p.add_argument("--workdir", type=Path, default=None, help="keep products and outputs here (default: temp)")
    p.add_argument("--reference-dir", default=None,
                   help="reference set for the accuracy comparison (default: the shipped set, if it holds a network)")
    p.add_argument("--rr-procs", type=int, default=None, help="redrock processes (default: all cores; quick: 1)")
    p.add_argument("--n-e2e", type=int, default=None, help="objects in the end-to-end product (default 10000)")
    p.add_argument("--n-mem", type=int, default=None, help="objects in the peak-memory product (default 100000)")
    p.add_argument("--n-rr", type=int, default=None, help="spectra in the redrock comparison (default 1000)")
    args = p.parse_args(argv)
    args.argv = argv
    res = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(res))
    args.out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=float))
    log(f"wrote {args.out} and {args.out.with_suffix('.json')} ({res['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
