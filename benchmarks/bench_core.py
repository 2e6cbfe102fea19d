"""Speed benchmarks of the stage's pieces, each ratio measured inside one run.

* ``bench_matmul``: this machine's dense float32 matmul rate in TensorFlow (the yardstick);
* ``bench_preprocess``: the numba resample + normalise kernels against a plain numpy
  implementation of the same arithmetic (:func:`numpy_preprocess`, written here), and
  their numerical agreement;
* ``bench_backbone``: backbone inference spectra/s, FLOPs per spectrum (counted
  analytically from the configuration, cross-checked with TensorFlow's profiler) and the
  achieved FLOP/s as a fraction of the matmul rate;
* ``bench_bnn``: S-sample BNN, backbone once + head S times (``Sampler.predict``) against
  S full passes (``Sampler.predict_naive``): time ratio and agreement of their means;
* ``run_stage_subprocess``: the stage, FITS in -> FITS out, in a fresh process: spectra/s
  and the peak resident memory of that process after each product.

Every function returns plain dicts. The ``measure_*`` functions at the end are the suite's
benchmarks (``python -m benchmarks matmul preprocess backbone bnn e2e``): each takes the shared
:class:`~benchmarks.workspace.Workspace` and its size as keywords. Speed benchmarks use DUMMY
reference sets (``training.dummy.write_dummy_set``): untrained weights cost what trained ones cost.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _best_time(fn, repeats: int, min_time: float = 0.0) -> float:
    """Smallest wall time of ``repeats`` calls (at least one call after ``min_time`` total)."""
    best = np.inf
    spent = 0.0
    k = 0
    while k < repeats or spent < min_time:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best = min(best, dt)
        spent += dt
        k += 1
    return best


# ----------------------------------------------------------------------------- the machine
def machine_info() -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 2 ** 20, 1)
                break
    except OSError:
        pass
    if hasattr(os, "sched_getaffinity"):
        info["cores_usable"] = len(os.sched_getaffinity(0))
    import importlib.metadata as md
    for pkg in ("numpy", "numba", "tensorflow", "scipy", "astropy", "fitsio", "redrock"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            info[pkg] = "absent"
    info["load_1min"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return info


# ----------------------------------------------------------------------------- matmul yardstick
def bench_matmul(n: int = 4096, repeats: int = 5) -> dict:
    """float32 n x n @ n x n in TensorFlow (and numpy, for reference): best of ``repeats``."""
    import tensorflow as tf
    rng = np.random.default_rng(0)
    a_np = rng.standard_normal((n, n), dtype=np.float32)
    b_np = rng.standard_normal((n, n), dtype=np.float32)
    a, b = tf.constant(a_np), tf.constant(b_np)
    mm = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)[:1, :1]))
    mm(a, b).numpy()                                   # trace + warm
    t_tf = _best_time(lambda: mm(a, b).numpy(), repeats)
    np.dot(a_np, b_np)
    t_np = _best_time(lambda: np.dot(a_np, b_np), max(2, repeats // 2))
    flops = 2.0 * n ** 3
    return {"n": n, "tf_gflops": flops / t_tf / 1e9, "numpy_gflops": flops / t_np / 1e9,
            "tf_intra_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "tf_inter_threads": tf.config.threading.get_inter_op_parallelism_threads()}


# ----------------------------------------------------------------------------- preprocessing
def numpy_preprocess(bands: dict, grid, n: int):
    """Plain numpy version of ``preprocess.preprocess_bands`` (same arithmetic, vectorised over objects).

    Per band: sort each object's pixels by wavelength, validity (finite, ERR > 0, inside the
    band, first of repeated wavelengths), native pixel edges at the midpoints to the
    neighbouring samples, overlap x relative-inverse-variance weighted mean onto the grid
    with propagated error, output pixel valid where valid input covers half of it. Then one
    scale per object (median ERR of its valid grid pixels) divides flux and error; pixels with
    ERR above ``preprocess.MAX_REL_ERR`` x scale are zeroed in x. It mirrors the kernels as they
    stand: when they change, this reference must follow (the agreement check says so).
    Returns (x (n, L, 2) float32, valid (n, L), snr {band: (n,)}, npix {band: (n,)}).
    """
    length = grid.length
    flux = np.zeros((n, length))
    err = np.zeros((n, length))
    ok = np.zeros((n, length), dtype=bool)
    snr, npix = {}, {}
    for band in grid.bands:
        lo_col = grid.offset(band)
        edges = grid.edges(band)
        n_dst = edges.size - 1
        b_snr = np.zeros(n)
        b_npix = np.zeros(n, dtype=np.int64)
        data = bands.get(band)
        if data is not None and data.wave.size:
            counts = np.diff(data.offsets)
            counts[~np.asarray(data.present, bool)] = 0
            obj = np.repeat(np.arange(n), counts)
            take = np.concatenate([np.arange(a, a + c) for a, c in zip(data.offsets[:-1], counts)]) \
                if counts.sum() != data.wave.size else np.arange(data.wave.size)
            w0, f0, e0 = (np.asarray(getattr(data, k), np.float64)[take] for k in ("wave", "flux", "err"))
            order = np.lexsort((w0, obj))                       # by object, then wavelength (stable)
            w, f, e = w0[order], f0[order], e0[order]
            first = np.r_[True, obj[1:] != obj[:-1]]            # first pixel of its object
            last = np.r_[obj[1:] != obj[:-1], True]
            finite = np.isfinite(w) & np.isfinite(f) & np.isfinite(e)
            with np.errstate(invalid="ignore"):
                ok_nat = finite & (e > 0) & (w >= edges[0]) & (w <= edges[-1])
            # Repeated wavelength: keep the first valid pixel of the object only.
            iv = np.flatnonzero(ok_nat)
            dup = np.zeros(iv.size, bool)
            dup[1:] = (w[iv[1:]] == w[iv[:-1]]) & (obj[iv[1:]] == obj[iv[:-1]])
            ok_nat[iv[dup]] = False
            b_npix = np.bincount(obj[ok_nat], minlength=n)
            with np.errstate(divide="ignore", invalid="ignore"):
                s = np.where(ok_nat, np.maximum(f, 0.0) / np.where(ok_nat, e, 1.0), 0.0)
            b_snr = np.where(b_npix > 0, np.bincount(obj, weights=s, minlength=n) / np.maximum(b_npix, 1), 0.0)
            e_min = np.full(n, np.inf)
            np.minimum.at(e_min, obj[ok_nat], e[ok_nat])
            # Native edges: midpoints to the neighbouring samples (valid or not), within the object.
            w_prev = np.r_[np.nan, w[:-1]]
            w_next = np.r_[w[1:], np.nan]
            with np.errstate(invalid="ignore"):
                has_left = ~first & np.isfinite(w_prev) & (w_prev < w)
                has_right = ~last & np.isfinite(w_next) & (w_next > w)
            left = np.where(has_left, 0.5 * (w_prev + w), 0.0)
            right = np.where(has_right, 0.5 * (w + w_next), 0.0)
            left = np.where(has_left, left, w - (right - w))
            right = np.where(has_right, right, w + (w - left))
            use = ok_nat & (has_left | has_right) & (right > left)
            k = np.flatnonzero(use)
            o_k, l_k, r_k, f_k = obj[k], left[k], right[k], f[k]
            ivar = (e_min[o_k] / e[k]) ** 2
            j0 = np.maximum(np.searchsorted(edges, l_k) - 1, 0)
            j1 = np.minimum(np.searchsorted(edges, r_k, side="left"), n_dst)   # edges[j] < right
            span = int((j1 - j0).max()) if k.size else 0
            num = np.zeros(n * n_dst)
            den = np.zeros(n * n_dst)
            var_num = np.zeros(n * n_dst)
            cover = np.zeros(n * n_dst)
            for d in range(span):
                j = j0 + d
                sel = j < j1
                jj = j[sel]
                o = np.minimum(r_k[sel], edges[jj + 1]) - np.maximum(l_k[sel], edges[jj])
                pos = o > 0
                idx = o_k[sel][pos] * n_dst + jj[pos]
                o, iv_s, f_s = o[pos], ivar[sel][pos], f_k[sel][pos]
                num += np.bincount(idx, weights=o * iv_s * f_s, minlength=n * n_dst)
                den += np.bincount(idx, weights=o * iv_s, minlength=n * n_dst)
                var_num += np.bincount(idx, weights=o * o * iv_s, minlength=n * n_dst)
                cover += np.bincount(idx, weights=o, minlength=n * n_dst)
            num, den, var_num, cover = (a.reshape(n, n_dst) for a in (num, den, var_num, cover))
            good = (den > 0) & (cover >= grid.min_cover * np.diff(edges)[None, :])
            with np.errstate(divide="ignore", invalid="ignore"):
                f_out = np.where(good, num / np.where(good, den, 1.0), 0.0)
                e_out = np.where(good, np.sqrt(var_num) / np.where(good, den, 1.0)
                                 * np.where(np.isfinite(e_min), e_min, 0.0)[:, None], 0.0)
            flux[:, lo_col:lo_col + n_dst] = f_out
            err[:, lo_col:lo_col + n_dst] = e_out
            ok[:, lo_col:lo_col + n_dst] = good
        snr[band] = b_snr.astype(np.float32)
        npix[band] = b_npix.astype(np.int32)
    import warnings
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)          # all-NaN rows: objects with no valid pixel
        scale = np.nanmedian(np.where(ok, err, np.nan), axis=1) if length else np.ones(n)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    # Pixels noisier than MAX_REL_ERR x the scale are zeroed in x (the valid mask keeps them), as the kernel does.
    keep = ok & (err <= grid.max_rel_err * scale[:, None])
    x = np.zeros((n, length, 2), dtype=np.float32)
    x[..., 0] = np.where(keep, flux / scale[:, None], 0.0)
    x[..., 1] = np.where(keep, err / scale[:, None], 0.0)
    unusable = ~np.isfinite(x).all(axis=2)
    x[unusable] = 0.0
    ok &= ~unusable
    return x, ok, snr, npix


def read_product_bands(path, n_max=None):
    """(bands, n, objid) of the first ``n_max`` objects of a product, as the stage reads them."""
    from csst_sls_z.products import open_product
    with open_product(path) as reader:
        n = reader.n_objects if n_max is None else min(n_max, reader.n_objects)
        bands = {b: reader.read_band(b, slice(0, n)) for b in ("GV", "GI")}
        objid = np.asarray(reader.objid[:n])
    return bands, n, objid


def bench_preprocess(product, grid, n_max=None, repeats=3) -> dict:
    """numba ``preprocess_bands`` vs :func:`numpy_preprocess` on the same spectra (read once, in memory)."""
    from csst_sls_z.preprocess import preprocess_bands
    bands, n, _ = read_product_bands(product, n_max)
    pp = preprocess_bands(bands, grid, n)                           # compile / load numba cache
    t_numba = _best_time(lambda: preprocess_bands(bands, grid, n), repeats)
    x_np, ok_np, snr_np, npix_np = numpy_preprocess(bands, grid, n)
    t_numpy = _best_time(lambda: numpy_preprocess(bands, grid, n), max(1, repeats - 1))
    diff = float(np.max(np.abs(pp.x - x_np))) if n else 0.0
    scale = float(np.max(np.abs(pp.x))) if n else 1.0
    agree = (bool(np.array_equal(pp.valid, ok_np)) and np.allclose(pp.x, x_np, rtol=1e-5, atol=1e-5 * scale)
             and all(np.array_equal(pp.npix[b], npix_np[b]) for b in grid.bands)
             and all(np.allclose(pp.snr[b], snr_np[b], rtol=1e-5) for b in grid.bands))
    import numba
    return {"n": n, "numba_per_s": n / t_numba, "numpy_per_s": n / t_numpy, "speedup": t_numpy / t_numba,
            "max_abs_diff": diff, "max_abs_value": scale, "agree": bool(agree),
            "numba_threads": numba.get_num_threads()}


# ----------------------------------------------------------------------------- backbone
def conv_macs(cfg) -> dict:
    """Multiply-accumulates per spectrum of every Conv1D / Dense layer of ``build_backbone(cfg)``."""
    macs = {}
    length = cfg.input_length
    macs["stem_conv"] = length * cfg.kernel * 2 * cfg.stem_filters
    length = length // 2                                   # MaxPooling1D(2), padding "valid"
    c_in = cfg.stem_filters
    for i, width in enumerate(cfg.widths):
        down = i % 2 == 1
        l_out = -(-length // 2) if down else length        # stride 2, padding "same": ceil
        macs[f"block{i}_c1"] = l_out * cfg.kernel * c_in * width
        macs[f"block{i}_c2"] = l_out * cfg.kernel * width * width
        if down or c_in != width:
            macs[f"block{i}_skip"] = l_out * c_in * width
        length, c_in = l_out, width
    macs["output_dense"] = c_in * (cfg.n_bins if cfg.objective == "zbins" else 1)
    return macs


def profiler_flops(model, input_length: int) -> int:
    """TensorFlow's own float-operation count of one forward pass (1 spectrum), frozen graph."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    fn = tf.function(lambda x: model(x, training=False))
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function(tf.TensorSpec([1, input_length, 2],
                                                                                      tf.float32)))
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    level = tf.get_logger().level
    tf.get_logger().setLevel("ERROR")                     # the v1 profiler's deprecation notices
    try:
        return int(tf.compat.v1.profiler.profile(graph=frozen.graph, options=opts).total_float_ops)
    finally:
        tf.get_logger().setLevel(level)


def head_macs(cfg, n_samples: int) -> dict:
    """Multiply-accumulates per spectrum of the MNF head's S samples (``BNNHead.sample_moments``):
    the first layer's mean once per sample on z-scaled features and its variance once per
    object; every later layer's mean and variance once per sample; the Dense(2) output."""
    units = (cfg.widths[-1],) + tuple(cfg.head_units)
    macs = {"mnf0_variance (once)": units[0] * units[1], "mnf0_mean": n_samples * units[0] * units[1]}
    for i in range(1, len(cfg.head_units)):
        macs[f"mnf{i}_mean"] = macs[f"mnf{i}_variance"] = n_samples * units[i] * units[i + 1]
    macs["mu_sigma"] = n_samples * units[-1] * 2
    return macs


def bench_backbone(network: str, n: int, batch: int = 256, input_length: int = 913, repeats: int = 3,
                   with_profiler: bool = True) -> dict:
    """Inference spectra/s of the backbone of CONFIGS[network] (batch ``batch``, data in memory):
    as the stage runs it (``FrozenBackbone``, BatchNorm folded, float32: ``spectra_per_s``),
    the Keras model it is made from (``keras_per_s``) and the bfloat16 option
    (``bfloat16_per_s``), the three alternated on the same spectra in this one process."""
    import tensorflow as tf
    from csst_sls_z.network.backbone import FrozenBackbone, build_backbone
    from csst_sls_z.network.config import CONFIGS
    cfg = replace(CONFIGS[network], input_length=input_length)
    tf.random.set_seed(0)
    model = build_backbone(cfg)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((n, cfg.input_length, 2)).astype(np.float32))
    float32, bfloat16 = FrozenBackbone(model, cfg), FrozenBackbone(model, cfg, "bfloat16")
    forwards = {"spectra_per_s": tf.function(lambda xb: float32(xb)[1], reduce_retracing=True),
                "keras_per_s": tf.function(lambda xb: model(xb, training=False)["output"], reduce_retracing=True),
                "bfloat16_per_s": tf.function(lambda xb: bfloat16(xb)[1], reduce_retracing=True)}

    def runner(fwd):
        def run():
            for s in range(0, n, batch):
                fwd(x[s:s + batch]).numpy()
        return run
    runs = {k: runner(f) for k, f in forwards.items()}
    for run in runs.values():
        run()                                              # trace every batch shape
    best = {k: float("inf") for k in runs}
    for _ in range(repeats):                               # alternated: the same machine state for each
        for k, run in runs.items():
            best[k] = min(best[k], _best_time(run, 1))
    macs = conv_macs(cfg)
    flops = 2.0 * sum(macs.values())
    out = {"network": network, "n": n, "batch": batch, "params": int(model.count_params()),
           "flops_per_spectrum": flops}
    out.update({k: n / t for k, t in best.items()})
    out["achieved_gflops"] = flops * out["spectra_per_s"] / 1e9
    if with_profiler:
        out["profiler_flops"] = profiler_flops(model, cfg.input_length)
    return out


# ----------------------------------------------------------------------------- BNN sampling
def compiled_naive(sampler, x: np.ndarray, chunk_index: int = 0, max_passes: int | None = None):
    """S full forward passes like ``Sampler.predict_naive`` (same batches, same noise), but each pass
    (backbone + one head sample) is one compiled ``tf.function`` call, so the comparison is not
    inflated by eager-mode head calls. Returns (mean, sigma) float64 (``max_passes``: stop early,
    for warming up)."""
    import tensorflow as tf

    def one_pass(xb, eps_s):
        feats, z_cnn = sampler._forward(xb)
        mu, sigma = sampler.head(feats[None], z_cnn[None], eps=eps_s)
        return mu[0], sigma[0]
    step = tf.function(one_pass)
    means, sigmas = [], []
    for b, start in enumerate(range(0, x.shape[0], sampler.batch)):
        xb = tf.convert_to_tensor(x[start:start + sampler.batch])
        eps = sampler.head.noise(sampler.n_samples, xb.shape[0], sampler._seed(chunk_index * 100003 + b),
                                   sampler.per_object_noise)
        mus, sig2 = [], []
        for s in range(sampler.n_samples if max_passes is None else min(max_passes, sampler.n_samples)):
            mu, sigma = step(xb, [(ez[s:s + 1], eo[s:s + 1]) for ez, eo in eps])
            mus.append(mu.numpy().astype(np.float64))
            sig2.append(sigma.numpy().astype(np.float64) ** 2)
        mus = np.stack(mus)
        mean = mus.mean(axis=0)
        means.append(mean)
        sigmas.append(np.sqrt(np.mean(sig2, axis=0) + np.mean((mus - mean) ** 2, axis=0)))
    return np.concatenate(means), np.concatenate(sigmas)


def bench_bnn(refdir, x: np.ndarray, n_naive: int, n_samples: int = 200, repeats: int = 2,
              eager: bool = True) -> dict:
    """Backbone-once sampler vs S full passes, on the same ``n_naive`` spectra with the same noise.

    The headline ratio uses :func:`compiled_naive` (each full pass compiled; the faster, fairer
    baseline); ``Sampler.predict_naive`` (eager head calls) is timed too, and both are checked
    against ``Sampler.predict`` (``eager=False`` skips the slow eager run)."""
    from csst_sls_z.network.loader import load_sampler
    from csst_sls_z.reffiles.sets import load_reference_set
    refset = load_reference_set(refdir, required=("backbone", "bnnhead"))
    sampler, cfg = load_sampler(refset, n_samples, 0)
    xs = np.ascontiguousarray(x[:n_naive])
    sampler.predict(xs)                                     # trace
    t_once = _best_time(lambda: sampler.predict(xs), repeats)
    once = sampler.predict(xs)
    compiled_naive(sampler, xs, max_passes=2)               # trace the compiled pass at this batch shape
    t0 = time.perf_counter()
    c_mean, c_sigma = compiled_naive(sampler, xs)
    t_compiled = time.perf_counter() - t0
    if eager:
        t0 = time.perf_counter()
        naive = sampler.predict_naive(xs)
        n_mean, n_sigma = naive.mean.astype(np.float64), naive.sigma.astype(np.float64)
        t_naive = time.perf_counter() - t0
    else:
        n_mean, n_sigma, t_naive = c_mean, c_sigma, float("nan")
    # Throughput of the production path on all of x.
    sampler.predict(x)
    t_all = _best_time(lambda: sampler.predict(x), repeats)
    m_once = once.mean.astype(np.float64)
    d_mean = max(np.abs(m_once - n_mean).max(), np.abs(m_once - c_mean).max())
    d_sig = max(np.abs(once.sigma - n_sigma).max(), np.abs(once.sigma - c_sigma).max())
    ref_sigma = np.maximum(np.minimum(n_sigma, c_sigma), 1e-12)
    return {"network": cfg.name, "samples": n_samples, "n_naive": int(xs.shape[0]),
            "once_per_s_same_n": xs.shape[0] / t_once, "naive_per_s": xs.shape[0] / t_compiled,
            "naive_eager_per_s": xs.shape[0] / t_naive,
            "ratio_same_n": t_compiled / t_once, "ratio_same_n_eager": t_naive / t_once,
            "n_all": int(x.shape[0]), "once_per_s": x.shape[0] / t_all,
            "ratio_throughput": (t_compiled / xs.shape[0]) / (t_all / x.shape[0]),
            "max_abs_dmean": float(d_mean), "max_abs_dsigma": float(d_sig),
            "eager_checked": bool(eager),
            "max_dmean_over_sigma": float((np.maximum(np.abs(m_once - n_mean), np.abs(m_once - c_mean))
                                           / ref_sigma).max())}


# ----------------------------------------------------------------------------- the stage, end to end
STAGE_SNIPPET = r"""
import json, os, resource, sys, time
sys.path.insert(0, {root!r})
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
t_start = time.perf_counter()
from csst_sls_z.stage import RedshiftStage
spec = json.loads(sys.argv[1])
stages = {{}}
from benchmarks.rss_sampler import PeakRss, status_kib
rss = PeakRss()      # mapped pages of the input are reclaimable page cache: report them apart
for job in spec["jobs"]:
    refdir = job["refdir"]
    catalog_only = job.get("catalog_only", "False") == "True"
    precision = job.get("precision", "float32")
    no_refine = job.get("no_refine", "False") == "True"
    key = (refdir, catalog_only, precision, no_refine)
    setup = 0.0
    if key not in stages:
        t0 = time.perf_counter()
        stage = RedshiftStage(samples=spec["samples"], reference_dir=refdir, overwrite=True,
                              chunk_size=spec["chunk_size"], catalog_only=catalog_only,
                              backbone_precision=precision, no_refine=no_refine)
        stage.load_references(); stage.sampler()
        if spec.get("warm"):
            stage.run([spec["warm"]], job["out"] + ".warm.fits")     # trace the tf.functions once
        stages[key] = stage
        setup = time.perf_counter() - t0 + (t0 - t_start if len(stages) == 1 else 0.0)
    time.sleep(0.05)
    rss.reset()
    t0 = time.perf_counter()
    res = stages[key].run([job["product"]], job["out"])
    run_s = time.perf_counter() - t0
    time.sleep(0.05)
    print("RESULT " + json.dumps({{"name": job["name"], "status": res.status.value,
                                  "n": res.summary.get("n_objects", 0), "run_s": run_s, "setup_s": setup,
                                  "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                                  "vmhwm_mib": status_kib("VmHWM") / 1024.0,
                                  "anon_peak_mib": rss.peak["RssAnon"] / 1024.0,
                                  "file_peak_mib": rss.peak["RssFile"] / 1024.0,
                                  "message": res.message}}), flush=True)
"""


def run_stage_subprocess(jobs, samples=200, chunk_size=4096, warm=None) -> dict:
    """The stage in one fresh interpreter, running ``jobs`` in order.

    ``jobs``: list of dicts (name, product, out, refdir; optional catalog_only, precision: the
    stage's ``backbone_precision``, no_refine; each combination is a stage of its own). Set-up (TensorFlow import, reference
    files, network build, a warm-up run on ``warm`` that traces the tf.functions) is timed
    apart from each job's run. After each job the child reports its peak resident memory so
    far, as ``ru_maxrss`` and as ``VmHWM`` from /proc/self/status (a footprint that grows with
    the file would show as a rise from job to job); after the child is reaped the parent reads
    ``RUSAGE_CHILDREN``, which on Linux also holds the peak RSS of this parent process itself
    (carried into the intermediate shell across execve), so it is a ceiling, not the child's peak.
    Returns {name: result} plus "process_wall_s" and "children_maxrss_mib".
    """
    spec = {"jobs": [{k: str(v) for k, v in j.items()} for j in jobs], "samples": samples,
            "chunk_size": chunk_size, "warm": str(warm) if warm is not None else None}
    cmd = [sys.executable, "-c", STAGE_SNIPPET.format(root=str(ROOT)), json.dumps(spec)]
    if Path("/bin/sh").exists():
        # Linux carries a process's peak RSS across execve into ru_maxrss, so a child exec'd straight
        # from this (large, TensorFlow-holding) process would report at least this process's peak.
        # A shell in between forks the real child from a small process: its ru_maxrss is its own.
        cmd = ["/bin/sh", "-c", '"$@"; exit $?', "sh", *cmd]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"stage subprocess failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-3:]}")
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[len("RESULT "):])
            r["spectra_per_s"] = r["n"] / r["run_s"] if r["run_s"] > 0 else float("nan")
            out[r["name"]] = r
    out["process_wall_s"] = wall
    out["children_maxrss_mib"] = children_maxrss_mib()
    return out


def children_maxrss_mib() -> float:
    """resource.getrusage(RUSAGE_CHILDREN).ru_maxrss: the largest peak RSS of any child reaped so far."""
    import resource
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


# ----------------------------------------------------------------------------- the suite's benchmarks
SAMPLES = 200          # BNN samples per spectrum, as the stage's default


def measure_matmul(ws, n: int, repeats: int) -> dict:
    """The yardstick: dense float32 n x n matmul, TensorFlow and numpy."""
    return bench_matmul(n, repeats)


def measure_preprocess(ws, n: int, repeats: int) -> dict:
    """numba ``preprocess_bands`` against the plain numpy reference on ``n`` simulated spectra."""
    return bench_preprocess(ws.product(n), ws.grid(), n_max=n, repeats=repeats)


def measure_backbone(ws, n: int, repeats: int, profile_paper: bool) -> dict:
    """Backbone inference of the ``cpu`` and ``paper`` configurations on ``n`` random spectra."""
    length = ws.grid().length
    return {net: bench_backbone(net, n, input_length=length, repeats=repeats,
                                with_profiler=net == "cpu" or profile_paper)
            for net in ("cpu", "paper")}


def measure_bnn(ws, n: int, n_naive: int, repeats: int, eager: bool, samples: int = SAMPLES) -> dict:
    """The backbone-once sampler against S full passes (DUMMY ``cpu`` set), on ``n`` simulated
    spectra (``n_naive`` of them for the slow way), with the network's FLOPs per spectrum."""
    from csst_sls_z.network.config import CONFIGS
    from csst_sls_z.preprocess import preprocess_bands
    grid = ws.grid()
    bands, n_read, _ = read_product_bands(ws.product(n), n)
    x = preprocess_bands(bands, grid, n_read).x
    out = bench_bnn(ws.dummy_set("cpu"), x, n_naive, samples, repeats=repeats, eager=eager)
    cfg = replace(CONFIGS["cpu"], input_length=grid.length)
    out["backbone_flops_per_spectrum"] = 2.0 * sum(conv_macs(cfg).values())
    out["head_flops_per_spectrum"] = 2.0 * sum(head_macs(cfg, samples).values())
    return out


def measure_end_to_end(ws, n: int, n_large: int, n_warm: int, samples: int = SAMPLES) -> dict:
    """The stage (DUMMY ``cpu`` set) in one fresh process: ``n`` objects, then ``n_large`` (peak
    memory after each), then ``n`` again with the bfloat16 backbone."""
    dummy, out = ws.dummy_set("cpu"), ws.path("end_to_end")
    small, large = ws.product(n), ws.product(n_large)
    jobs = [{"name": "small", "product": small, "out": out / "small_slsz.fits", "refdir": dummy},
            {"name": "large", "product": large, "out": out / "large_slsz.fits", "refdir": dummy},
            {"name": "bfloat16", "product": small, "out": out / "bfloat16_slsz.fits", "refdir": dummy,
             "precision": "bfloat16"}]
    runs = run_stage_subprocess(jobs, samples, warm=ws.product(n_warm, seed=101))
    return {"samples": samples, **runs}
