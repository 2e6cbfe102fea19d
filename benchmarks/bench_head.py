"""The BNN head at S = 200: what each way of sampling it costs, measured in one process.

    python benchmarks/bench_head.py                          # a few minutes on 2 idle cores
    python benchmarks/bench_head.py --objects 1024 --repeats 3 --blocks 25,50 --copies 100 --json /tmp/head.json
    python benchmarks/bench_head.py --skip-head --copies 100 --chunk-size 512        # the stage, reading ahead
    python benchmarks/bench_head.py --skip-head --skip-stage --samples 20 --memory 200,1000
    python benchmarks/bench_head.py --skip-head --skip-stage --s-sweep 20,50,100,200,400

Everything below runs in one process, on the shipped weights (``csst_sls_z_0003``, the
``cpu`` network) unless ``--network`` names a configuration (random weights, e.g.
``paper``), so every ratio is measured on one machine state; the variants alternate within
each repeat, so load on a shared machine hits them alike.

**The head alone.** ``--objects`` random spectra through the backbone once; their features
then through ``S`` head samples in batches of 256 (the stage's batches, seeded as the stage
seeds them), by each variant:

* ``reference``: the original head path (``Sampler(head_path="reference")``): the
  features tiled S times, the noise drawn inside the same ``tf.function``;
* ``tiled, noise apart``: the same arithmetic, the noise drawn by a separate call (how the
  fused path draws it), so the next rows change one thing at a time;
* ``tiled, XLA``: that, compiled with ``jit_compile=True``;
* ``var once, z folded``: :meth:`BNNHead.sample_moments` (first-layer variance once per
  object, z folded into the inputs, nothing tiled), without XLA;
* ``var once, z folded, XLA``: the same compiled: the shipped path
  (``Sampler(head_path="fused")``);
* ``noise alone``: drawing the stateless noise (the part every exact path pays);
* ``..., S in blocks of b`` (``--blocks``): the shipped path with the samples run b at a
  time in a loop inside XLA (``Sampler(head_block=b)``), to see whether smaller tensors help;
* ``XLA with its own noise`` (``--xla-noise``): ``sample_moments`` with the noise drawn inside the compiled
  function; XLA draws its normals another way, so this is not the same numbers, only the
  same distribution: its agreement is shown as z-scores of the difference of the means.

For each: ms per spectrum (wall, and process CPU time over both cores), the ratio to the
reference, and the largest differences of (mean, aleatoric, epistemic) from the reference.
The backbone's own ms per spectrum is measured beside them (the target: the head costs
less than the backbone).

**The stage.** A fixed product (``tests/data/golden_input.fits``'s rows repeated
``--copies`` times, OBJIDs renumbered, each copy's FLUX moved by its ERR times a seeded
normal draw) through ``RedshiftStage.process_file`` (catalogue only): the reference head
with chunks read in turn (before), the fused head with chunks read in turn (now, the
default), the fused head with the next chunk read while this one is measured
(``stage.prefetch = True``; needs 3 or more chunks, see ``--chunk-size``). Spectra/s of each, and how far
Z, ZERR, Z_LO, Z_HI, Z_CNN and ZWARN of the new ways are from the reference's.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from benchmarks.workspace import GOLDEN, write_repeated_product  # noqa: E402

REFSET = ROOT / "reference_files" / "csst_sls_z_0003"
BATCH = 256


# ----------------------------------------------------------------------------- the head alone
def _network(args):
    import tensorflow as tf
    if args.network == "0003":
        from csst_sls_z.network.loader import build_network
        net = build_network(backbone_file=REFSET / "backbone.fits", head_file=REFSET / "bnnhead.fits")
        return net.backbone, net.head, net.cfg, "csst_sls_z_0003 (trained cpu network)"
    from dataclasses import replace

    from csst_sls_z.network.config import CONFIGS
    from csst_sls_z.network.loader import build_network
    tf.random.set_seed(0)
    net = build_network(replace(CONFIGS[args.network], input_length=913))
    return net.backbone, net.head, net.cfg, f"{args.network} (random weights)"


def _agreement(ref, new, n_samples):
    """Largest differences of (mean, aleatoric, epistemic) of ``new`` from ``ref`` (float64)."""
    m0, a0, e0 = ref
    m1, a1, e1 = new
    sigma = np.sqrt(a0 + e0)
    out = {"max_abs_dmean": float(np.abs(m1 - m0).max()),
           "max_dmean_over_sigma": float((np.abs(m1 - m0) / np.maximum(sigma, 1e-12)).max()),
           "max_rel_daleatoric": float((np.abs(a1 - a0) / np.maximum(a0, 1e-12)).max()),
           "max_rel_depistemic": float((np.abs(e1 - e0) / np.maximum(e0, 1e-12)).max()),
           "max_abs_dsigma": float(np.abs(np.sqrt(a1 + e1) - sigma).max())}
    # Independent noise: the difference of two S-sample means of mu has variance (e0 + e1) / S.
    zs = (m1 - m0) / np.sqrt(np.maximum(e0 + e1, 1e-30) / n_samples)
    out.update(zscore_mean=float(zs.mean()), zscore_std=float(zs.std()),
               median_epistemic_ratio=float(np.median(e1 / np.maximum(e0, 1e-30))),
               median_aleatoric_ratio=float(np.median(a1 / np.maximum(a0, 1e-30))))
    return out


def bench_head(args) -> dict:
    import tensorflow as tf

    from csst_sls_z.network.sampler import Sampler
    backbone, head, cfg, source = _network(args)
    S = args.samples

    def sampler(**kw):
        return Sampler(backbone, head, cfg, n_samples=S, seed=0, batch=BATCH, **kw)
    # Every exact variant draws the noise per object, as the reference path does; the shipped path
    # shares it across the batch (the same distribution per object, other draws).
    ref = sampler(head_path="reference", per_object_noise=True)
    fused_po, fused_plain = sampler(per_object_noise=True), sampler(jit_compile=False, per_object_noise=True)
    fused = sampler()
    blocked = {b: sampler(head_block=b, per_object_noise=True) for b in args.blocks}

    def tiled_moments(feats, z_cnn, eps):          # the reference arithmetic, with the noise given
        n = tf.shape(feats)[0]
        tiled = tf.broadcast_to(feats[None], (S, n, feats.shape[-1]))
        mu, sigma = head(tiled, tf.broadcast_to(z_cnn[None], (S, n)), eps=eps)
        mean = tf.reduce_mean(mu, axis=0)
        return mean, tf.reduce_mean(sigma * sigma, axis=0), tf.reduce_mean(tf.square(mu - mean[None]), axis=0)
    tiled_apart = tf.function(tiled_moments)
    tiled_xla = tf.function(tiled_moments, jit_compile=True)
    xla_own_noise = tf.function(lambda f, z, seed: head.sample_moments(f, z, head.noise(S, tf.shape(f)[0], seed)),
                                jit_compile=True)
    variants = {
        "reference": lambda f, z, s: ref.head_moments(f, z, s),
        "tiled, noise apart": lambda f, z, s: tiled_apart(f, z, ref._noise(f, s)),
        "tiled, XLA": lambda f, z, s: tiled_xla(f, z, ref._noise(f, s)),
        "var once, z folded": lambda f, z, s: fused_plain.head_moments(f, z, s),
        "var once, z folded, XLA": lambda f, z, s: fused_po.head_moments(f, z, s),
        **{f"var once, z folded, XLA, S in blocks of {b}": (lambda f, z, s, smp=smp: smp.head_moments(f, z, s))
           for b, smp in blocked.items()},
        "noise alone": lambda f, z, s: ref._noise(f, s),
        "var once, z folded, XLA, noise shared by the batch (shipped)": lambda f, z, s: fused.head_moments(f, z, s),
        "shared noise alone": lambda f, z, s: fused._noise(f, s),
    }
    if args.xla_noise:      # slow: XLA's own normals cost about 20x the whole head on this CPU
        variants["XLA with its own noise (not the same draws)"] = lambda f, z, s: xla_own_noise(f, z, s)
    n_obj = max(BATCH, args.objects // BATCH * BATCH)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_obj, cfg.input_length, 2)).astype(np.float32)
    xb = [tf.constant(x[i:i + BATCH]) for i in range(0, n_obj, BATCH)]
    seeds = [ref._seed(100003 * 0 + b) for b in range(len(xb))]
    fz = [ref._fwd(v) for v in xb]

    def run_backbone():
        for v in xb:
            out = ref._fwd(v)
        out[1].numpy()

    def run(fn):
        outs = [fn(f, z, seeds[b]) for b, (f, z) in enumerate(fz)]
        tf.nest.flatten(outs[-1])[-1].numpy()
        return outs

    timers = {"backbone": run_backbone, **{k: (lambda fn=fn: run(fn)) for k, fn in variants.items()}}
    first = {}
    values = {}
    for name, fn in timers.items():                       # warm up: trace, compile
        t0 = time.perf_counter()
        outs = fn()
        first[name] = time.perf_counter() - t0
        if name not in ("backbone", "noise alone", "shared noise alone"):
            values[name] = [np.concatenate([o[i].numpy() for o in outs]).astype(np.float64) for i in range(3)]
    times = {k: [] for k in timers}
    names = list(timers)
    for rep in range(args.repeats):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            t, c = time.perf_counter(), time.process_time()
            timers[name]()
            times[name].append((time.perf_counter() - t, time.process_time() - c))
    rows = {}
    for name in names:
        wall = statistics.median(t for t, _ in times[name])
        cpu = statistics.median(c for _, c in times[name])
        rows[name] = {"ms_per_spectrum": 1e3 * wall / n_obj, "cpu_ms_per_spectrum": 1e3 * cpu / n_obj,
                      "wall_range_s": [min(t for t, _ in times[name]), max(t for t, _ in times[name])],
                      "first_call_s": first[name], "compile_s_estimate": first[name] - wall}
    base = rows["reference"]["ms_per_spectrum"]
    base_cpu = rows["reference"]["cpu_ms_per_spectrum"]
    for name, r in rows.items():
        r["speedup_vs_reference"] = base / r["ms_per_spectrum"]
        r["cpu_speedup_vs_reference"] = base_cpu / r["cpu_ms_per_spectrum"]
        if name in values:
            r["agreement"] = _agreement(values["reference"], values[name], S)
    # The whole predict (backbone + head) both ways, on the same spectra.
    pred_t = {}
    pred = {}
    for name, s in (("reference", ref), ("fused", fused)):
        s.predict(x[:BATCH + 17])                          # a short batch too: traced and compiled
    for rep in range(args.repeats):
        for name, s in ((("reference", ref), ("fused", fused)) if rep % 2 == 0 else (("fused", fused), ("reference", ref))):
            t0 = time.perf_counter()
            pred[name] = s.predict(x[: n_obj - 17], chunk_index=3)       # ends in a short batch
            pred_t.setdefault(name, []).append(time.perf_counter() - t0)
    n_pred = n_obj - 17
    predict = {name: {"spectra_per_s": n_pred / statistics.median(t)} for name, t in pred_t.items()}
    predict["speedup"] = statistics.median(pred_t["reference"]) / statistics.median(pred_t["fused"])
    predict["agreement"] = _agreement(*[[getattr(pred[k], a).astype(np.float64) for a in ("mean", "aleatoric", "epistemic")]
                                        for k in ("reference", "fused")], S)
    predict["z_cnn_identical"] = bool(np.array_equal(pred["reference"].z_cnn, pred["fused"].z_cnn))
    return {"network": source, "samples": S, "objects": n_obj, "repeats": args.repeats, "rows": rows,
            "head_over_backbone": rows["var once, z folded, XLA, noise shared by the batch (shipped)"]["ms_per_spectrum"]
            / rows["backbone"]["ms_per_spectrum"],
            "head_over_backbone_per_object_noise": rows["var once, z folded, XLA"]["ms_per_spectrum"]
            / rows["backbone"]["ms_per_spectrum"], "predict": predict,
            "tf": tf.__version__}


# ----------------------------------------------------------------------------- the stage
def bench_stage(args) -> dict:
    import fitsio

    from csst_sls_z.stage import RedshiftStage
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_head_"))
    work.mkdir(parents=True, exist_ok=True)
    product = work / f"fixed_{args.copies}.fits"
    n = write_repeated_product(GOLDEN, args.copies, product, seed=1)
    stage = RedshiftStage(reference_dir=REFSET, catalog_only=True, overwrite=True, samples=args.samples,
                          chunk_size=args.chunk_size)
    from csst_sls_z.network.sampler import Sampler
    shared = stage.sampler()
    per_object = {path: Sampler(shared.backbone, shared.head, shared.cfg, n_samples=shared.n_samples,
                                seed=shared.seed, batch=shared.batch, head_path=path, per_object_noise=True)
                  for path in ("reference", "fused")}
    # (sampler, read ahead); the first is the reference every difference is taken from.
    ways = {"before: reference head, noise per object, chunks in turn": (per_object["reference"], False),
            "fused head, noise per object, chunks in turn": (per_object["fused"], False),
            "now: fused head, noise shared by the batch, chunks in turn": (shared, False),
            "now, next chunk read ahead (stage.prefetch = True)": (shared, True)}
    cats, times = {}, {name: [] for name in ways}

    def run(name):
        stage._sampler, stage.prefetch = ways[name]
        out = work / "out.fits"
        t0 = time.perf_counter()
        stage.process_file(product, out)
        dt = time.perf_counter() - t0
        cats[name] = fitsio.read(out, ext="SLS_REDSHIFT")
        return dt
    for name in ways:                                    # warm up (traces, XLA compile)
        run(name)
    names = list(ways)
    for rep in range(args.stage_repeats):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            times[name].append(run(name))
    ref = cats[names[0]]
    out = {"product": f"{GOLDEN.name} x {args.copies} (seeded flux noise)", "objects": n,
           "chunk_size": stage.params["chunk_size"], "ways": {}}
    t_ref = statistics.median(times[names[0]])
    for name in names:
        t = statistics.median(times[name])
        row = {"spectra_per_s": n / t, "speedup": t_ref / t, "run_s": times[name]}
        cat = cats[name]
        row["max_abs_diff"] = {c: float(np.nanmax(np.abs(cat[c].astype(np.float64) - ref[c].astype(np.float64))))
                               if np.isfinite(ref[c]).any() else 0.0 for c in ("Z", "ZERR", "Z_LO", "Z_HI")}
        row["nan_pattern_identical"] = all(bool(np.array_equal(np.isnan(cat[c]), np.isnan(ref[c])))
                                           for c in ("Z", "ZERR", "Z_LO", "Z_HI"))
        row["objid_z_cnn_zwarn_identical"] = all(bool(np.array_equal(cat[c], ref[c], equal_nan=c == "Z_CNN"))
                                                  for c in ("OBJID", "Z_CNN", "ZWARN"))
        out["ways"][name] = row
    return out


def bench_s_sweep(args) -> dict:
    """The stage on the fixed product at each S of ``--s-sweep``: how Z, ZERR and ZWARN move
    against the largest S (the shipped head, the default seed; a new S draws new noise)."""
    import fitsio

    from csst_sls_z.stage import RedshiftStage
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_head_"))
    work.mkdir(parents=True, exist_ok=True)
    product = work / f"fixed_{args.copies}.fits"
    if not product.exists():
        write_repeated_product(GOLDEN, args.copies, product, seed=1)
    values = [int(v) for v in args.s_sweep.split(",")]
    cats, rates = {}, {}
    for S in values:
        stage = RedshiftStage(reference_dir=REFSET, catalog_only=True, overwrite=True, samples=S)
        out = work / f"sweep_{S}.fits"
        stage.process_file(product, out)                 # warm (traces, compiles)
        t0 = time.perf_counter()
        stage.process_file(product, out)
        rates[S] = time.perf_counter() - t0
        cats[S] = fitsio.read(out, ext="SLS_REDSHIFT")
    top = max(values)
    ref = cats[top]
    ok = np.isfinite(ref["Z"]) & (ref["ZERR"] > 0)
    rows = {}
    for S in values:
        cat = cats[S]
        dz = np.abs(cat["Z"][ok] - ref["Z"][ok]) / (1.0 + ref["Z"][ok])
        rz = cat["ZERR"][ok] / ref["ZERR"][ok]
        rows[S] = {"spectra_per_s": len(cat) / rates[S],
                   "median_dz": float(np.median(dz)), "p95_dz": float(np.percentile(dz, 95)),
                   "median_dz_over_zerr": float(np.median(np.abs(cat["Z"][ok] - ref["Z"][ok]) / ref["ZERR"][ok])),
                   "median_zerr_ratio": float(np.median(rz)),
                   "p05_p95_zerr_ratio": [float(np.percentile(rz, 5)), float(np.percentile(rz, 95))],
                   "zwarn_changed": float(np.mean(cat["ZWARN"] != ref["ZWARN"]))}
    return {"reference_s": top, "objects": int(len(ref)), "compared": int(ok.sum()), "rows": rows}


MEMORY_SNIPPET = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from benchmarks.rss_sampler import PeakRss, status_kib
from csst_sls_z.products import writer
from csst_sls_z.stage import RedshiftStage
spec = json.loads(sys.argv[1])
writer.STREAM_COPY = spec["stream"]
stage = RedshiftStage(reference_dir=spec["refdir"], overwrite=True, samples=spec["samples"])
stage.run([spec["warm"]], spec["out"] + ".warm.fits")
rss = PeakRss()
for product in spec["products"]:
    time.sleep(0.05)
    rss.reset()
    t0 = time.perf_counter()
    res = stage.run([product], spec["out"])
    run_s = time.perf_counter() - t0
    time.sleep(0.05)
    print("RESULT " + json.dumps({{"product": product, "n": res.summary.get("n_objects", 0), "run_s": run_s,
                                  "status": res.status.value, "vmhwm_mib": status_kib("VmHWM") / 1024,
                                  "anon_peak_mib": rss.peak["RssAnon"] / 1024,
                                  "file_peak_mib": rss.peak["RssFile"] / 1024}}), flush=True)
"""


def bench_memory(args) -> dict:
    """Peak memory of the stage (full output: the input's extensions copied) on two fixed products
    of ``--memory`` copies, each way of copying in its own fresh process (VmHWM only grows)."""
    import subprocess
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_head_"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(v) for v in args.memory.split(",")]
    products = {}
    for c in [2] + sizes:
        products[c] = work / f"fixed_{c}.fits"
        if not products[c].exists():
            write_repeated_product(GOLDEN, c, products[c], seed=1)
    out = {"sizes": {}, "ways": {}}
    for c in sizes:
        out["sizes"][c] = {"objects": c * 24, "mib": products[c].stat().st_size / 2 ** 20}
    for name, stream in (("before: astropy's memory map", False), ("now: streamed in 8 MiB blocks", True)):
        spec = {"stream": stream, "refdir": str(REFSET), "samples": args.samples, "warm": str(products[2]),
                "out": str(work / "mem_out.fits"), "products": [str(products[c]) for c in sizes]}
        cmd = [sys.executable, "-c", MEMORY_SNIPPET.format(root=str(ROOT)),
               json.dumps(spec)]
        cmd = ["/bin/sh", "-c", '"$@"; exit $?', "sh", *cmd]   # a small parent: ru_maxrss/VmHWM are the child's own
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"memory run failed: {proc.stderr.strip().splitlines()[-3:]}")
        out["ways"][name] = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    return out


# ----------------------------------------------------------------------------- report
def markdown(head: dict | None, stage: dict | None, sweep: dict | None = None, memory: dict | None = None) -> str:
    L = []
    if head:
        L.append(f"Head: {head['network']}, S = {head['samples']}, {head['objects']:,} spectra in batches of "
                 f"{BATCH}, median of {head['repeats']} repeats (TensorFlow {head['tf']}).")
        L.append("")
        L.append("| variant | ms / spectrum (wall) | CPU ms / spectrum | speed-up vs reference (wall / CPU) "
                 "| first call incl. compile (s) | max abs d mean | max d mean / sigma | max rel d aleatoric "
                 "| max rel d epistemic |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for name, r in head["rows"].items():
            a = r.get("agreement")
            agree = (f"{a['max_abs_dmean']:.2g} | {a['max_dmean_over_sigma']:.2g} | {a['max_rel_daleatoric']:.2g} "
                     f"| {a['max_rel_depistemic']:.2g}") if a else "- | - | - | -"
            L.append(f"| {name} | {r['ms_per_spectrum']:.3f} | {r['cpu_ms_per_spectrum']:.3f} | "
                     f"{r['speedup_vs_reference']:.2f}x / {r['cpu_speedup_vs_reference']:.2f}x | "
                     f"{r['first_call_s']:.2f} | {agree} |")
        L.append("")
        for label, key in (("XLA with its own noise", "XLA with its own noise (not the same draws)"),
                           ("Noise shared by the batch (shipped)",
                            "var once, z folded, XLA, noise shared by the batch (shipped)")):
            own = head["rows"].get(key, {}).get("agreement")
            if own:
                L.append(f"{label}, in distribution: z-score of the difference of the means "
                     f"(d mean / sqrt((epistemic_ref + epistemic_new) / S)) mean {own['zscore_mean']:.3f}, "
                     f"std {own['zscore_std']:.3f} (independent draws: 0 and 1); median ratio of the epistemic "
                     f"variances {own['median_epistemic_ratio']:.3f}, of the aleatoric "
                     f"{own['median_aleatoric_ratio']:.4f}.")
        L.append("With the noise shared by a batch, the objects of one batch share their Monte-Carlo errors, so "
                 "these statistics across objects scatter like those of one object (about sqrt(2/S) for the "
                 "variance ratio), not like independent ones; each object's distribution is tested over 400 seeds "
                 "(`tests/test_head_paths.py::test_shared_output_noise_gives_each_object_the_same_distribution`).")
        L.append(f"Head (shipped) / backbone, per spectrum: {head['head_over_backbone']:.2f} "
                 f"({head['head_over_backbone_per_object_noise']:.2f} with the noise drawn per object).")
        p = head["predict"]
        L.append(f"`Sampler.predict` (backbone + head, ending in a short batch): reference "
                 f"{p['reference']['spectra_per_s']:,.0f} spectra/s, shipped (fused, noise shared by the batch) "
                 f"{p['fused']['spectra_per_s']:,.0f} ({p['speedup']:.2f}x); other draws, so in distribution: "
                 f"z-score of d mean mean {p['agreement']['zscore_mean']:.3f}, std {p['agreement']['zscore_std']:.3f}, "
                 f"median epistemic ratio {p['agreement']['median_epistemic_ratio']:.3f}; Z_CNN identical: "
                 f"{p['z_cnn_identical']}.")
    if stage:
        L.append("")
        L.append(f"Stage (`process_file`, catalogue only): {stage['product']}, {stage['objects']:,} objects, "
                 f"chunk {stage['chunk_size']}.")
        L.append("")
        L.append("| way | spectra/s | speed-up | max abs d Z | d ZERR | d Z_LO | d Z_HI | NaN where the reference "
                 "has NaN | OBJID, Z_CNN, ZWARN identical |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for name, r in stage["ways"].items():
            d = r["max_abs_diff"]
            L.append(f"| {name} | {r['spectra_per_s']:,.0f} | {r['speedup']:.2f}x | {d['Z']:.2g} | {d['ZERR']:.2g} "
                     f"| {d['Z_LO']:.2g} | {d['Z_HI']:.2g} | {r['nan_pattern_identical']} | "
                     f"{r['objid_z_cnn_zwarn_identical']} |")
    if sweep:
        L.append("")
        L.append(f"S sweep: the stage on the same product ({sweep['objects']:,} objects; {sweep['compared']:,} "
                 f"with a Z), each S against S = {sweep['reference_s']}:")
        L.append("")
        L.append("| S | spectra/s | median abs dZ/(1+z) | 95th percentile | median abs dZ / ZERR | median ZERR ratio "
                 "(5th-95th percentile) | ZWARN changed |")
        L.append("|---|---|---|---|---|---|---|")
        for S, r in sweep["rows"].items():
            lo, hi = r["p05_p95_zerr_ratio"]
            L.append(f"| {S} | {r['spectra_per_s']:,.0f} | {r['median_dz']:.2g} | {r['p95_dz']:.2g} | "
                     f"{r['median_dz_over_zerr']:.3f} | {r['median_zerr_ratio']:.4f} ({lo:.3f}-{hi:.3f}) | "
                     f"{100 * r['zwarn_changed']:.2f}% |")
    if memory:
        L.append("")
        L.append("Memory, the stage with its full output (the input's extensions copied), one fresh process per "
                 "way, the products in turn:")
        L.append("")
        L.append("| way | objects | input (MiB) | spectra/s | peak RssAnon (MiB) | peak RssFile (MiB) | VmHWM so far (MiB) |")
        L.append("|---|---|---|---|---|---|---|")
        for name, rows in memory["ways"].items():
            for r, (c, size) in zip(rows, memory["sizes"].items()):
                L.append(f"| {name} | {r['n']:,} | {size['mib']:,.0f} | {r['n'] / r['run_s']:,.0f} | "
                         f"{r['anon_peak_mib']:,.0f} | {r['file_peak_mib']:,.0f} | {r['vmhwm_mib']:,.0f} |")
    return "\n".join(L)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--objects", type=int, default=1024, help="spectra for the head alone (batches of 256)")
    p.add_argument("--samples", type=int, default=200, help="S, head samples per spectrum")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--blocks", default="", type=lambda v: [int(b) for b in v.split(",") if b.strip()],
                   help="also time the fused head with the S samples in blocks of these sizes, e.g. 25,50")
    p.add_argument("--xla-noise", action="store_true", help="also time the head with XLA drawing its own "
                   "noise (not the same draws; slow on CPU)")
    p.add_argument("--network", default="0003", help="'0003' (shipped weights) or a configuration name")
    p.add_argument("--copies", type=int, default=100, help="copies of the golden product's rows for the stage")
    p.add_argument("--stage-repeats", type=int, default=2)
    p.add_argument("--chunk-size", type=int, default=4096, help="the stage's chunk (reading ahead needs 3 or more)")
    p.add_argument("--s-sweep", default="", help="comma-separated S values for the stage on the fixed "
                   "product, e.g. 20,50,100,200,400 (empty: skip)")
    p.add_argument("--memory", default="", help="two copy counts, e.g. 100,1000: peak memory of the full "
                   "output on fixed products of those sizes, astropy's memory map against streaming (empty: skip)")
    p.add_argument("--skip-head", action="store_true")
    p.add_argument("--skip-stage", action="store_true")
    p.add_argument("--workdir", default=None)
    p.add_argument("--json", default=None, help="write every number here")
    return p


def measure_head(ws, objects: int, repeats: int, copies: int, stage_repeats: int, chunk_size: int,
                 samples: int = 200) -> dict:
    """The suite's benchmark: the head variants alone (shipped weights), then the stage's ways
    on the fixed product of ``copies`` x 24 objects, as ``bench_head.py`` with those options."""
    args = parser().parse_args([])
    args.objects, args.repeats, args.copies, args.stage_repeats = objects, repeats, copies, stage_repeats
    args.chunk_size, args.samples, args.workdir = chunk_size, samples, str(ws.path("head"))
    return {"head": bench_head(args), "stage": bench_stage(args)}


def report_head(res: dict) -> str:
    return markdown(res["head"], res["stage"])


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    t0 = time.time()
    head = None if args.skip_head else bench_head(args)
    stage = None if args.skip_stage or args.network != "0003" else bench_stage(args)
    sweep = bench_s_sweep(args) if args.s_sweep and args.network == "0003" else None
    memory = bench_memory(args) if args.memory else None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(markdown(head, stage, sweep, memory))
    print(f"\n{time.time() - t0:.0f} s in all; 1-minute load average at the end {load:.2f}; "
          f"{os.cpu_count()} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps({"head": head, "stage": stage, "s_sweep": sweep, "memory": memory,
                                               "load_1min_end": load}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
