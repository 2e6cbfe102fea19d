"""The suite's results as one markdown page: a section per benchmark that ran, then where the
time goes and the targets, each row only where the benchmarks it needs ran in the same run.

:func:`markdown` takes what :func:`benchmarks.suite.run_suite` returns.
"""
from __future__ import annotations

import math

import numpy as np

TARGETS = {
    "e2e": 2000.0,            # spectra/s end to end, cpu network, S = 200, 2 cores
    "e2e_progress": 1500.0,   # spectra/s: the bar that counts as progress
    "bnn": 50.0,              # x faster than S full passes
    "redrock": 150.0,         # x faster than redrock's DESI scan
    "backbone": 0.50,         # fraction of the measured dense-matmul FLOP/s
    "startup_s": 3.0,         # launch to the first processed chunk
    "fail_fast_s": 1.0,       # a wrong `run` command to its error
}


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


def fraction_of_matmul(results, network: str):
    """The backbone's achieved FLOP/s over the dense-matmul rate of the same run (None without both)."""
    if "backbone" not in results or "matmul" not in results:
        return None
    return results["backbone"][network]["achieved_gflops"] / results["matmul"]["tf_gflops"]


# ----------------------------------------------------------------------------- sections
def machine(m: dict, load_end) -> list[str]:
    return ["## Machine", "", "| quantity | value |", "|---|---|",
            f"| CPU | {m['cpu']} |",
            f"| cores (usable) | {m['cores']} ({m.get('cores_usable', m['cores'])}) |",
            f"| memory | {m.get('memory_gib', '?')} GiB |",
            f"| versions | Python {m['python']}, numpy {m['numpy']}, numba {m['numba']}, TensorFlow "
            f"{m['tensorflow']}, redrock {m['redrock']} |",
            f"| 1-min load average, start / end | {m['load_1min']} / {load_end} |", ""]


def section_matmul(mm, results) -> list[str]:
    return ["| quantity | value |", "|---|---|",
            f"| TensorFlow float32 matmul {mm['n']}x{mm['n']} | {fmt(mm['tf_gflops'])} GFLOP/s |",
            f"| numpy float32 matmul {mm['n']}x{mm['n']} | {fmt(mm['numpy_gflops'])} GFLOP/s |",
            f"| TensorFlow threads (intra / inter, 0 = default) | {mm['tf_intra_threads']} / "
            f"{mm['tf_inter_threads']} |"]


def section_preprocess(pp, results) -> list[str]:
    return [f"Resample GV + GI onto the network grid and normalise, {pp['n']:,} spectra read from a product "
            "(in memory).", "", "| quantity | value |", "|---|---|",
            f"| numba (`preprocess_bands`, {pp['numba_threads']} threads) | {fmt(pp['numba_per_s'])} spectra/s |",
            f"| plain numpy (`bench_core.numpy_preprocess`, vectorised) | {fmt(pp['numpy_per_s'])} spectra/s |",
            f"| numba speed-up over numpy | {fmt(pp['speedup'])}x |",
            f"| numba and numpy agree (masks, NPIX, SNR exactly; x to 1e-5) | {fmt(pp['agree'])} "
            f"(max abs difference {pp['max_abs_diff']:.3g}) |"]


def section_backbone(bb, results) -> list[str]:
    L = ["Inference, batch 256, data in memory. FLOPs = 2 x the conv / dense multiply-accumulates counted from "
         "the configuration (BatchNorm, ReLU, adds, pooling not counted); TensorFlow's profiler count of the "
         "frozen graph beside it. spectra/s: as the stage runs it (`FrozenBackbone`: BatchNorm folded into the "
         "convolutions, float32); beside it the Keras model it is made from and the bfloat16 option "
         "(`--backbone-precision bfloat16`), alternated in this run.", "",
         "| network | parameters | spectra/s | Keras model | bfloat16 | MFLOP / spectrum (analytic) | "
         "MFLOP (TF profiler) | achieved GFLOP/s | fraction of matmul |",
         "|---|---|---|---|---|---|---|---|---|"]
    for net in ("cpu", "paper"):
        b = bb[net]
        prof = f"{b['profiler_flops'] / 1e6:,.1f}" if "profiler_flops" in b else "not run"
        frac = fraction_of_matmul(results, net)
        L.append(f"| {net} | {b['params']:,} | {fmt(b['spectra_per_s'])} | {fmt(b['keras_per_s'])} | "
                 f"{fmt(b['bfloat16_per_s'])} | {b['flops_per_spectrum'] / 1e6:,.1f} | {prof} | "
                 f"{fmt(b['achieved_gflops'])} | {'-' if frac is None else f'{frac:.0%}'} |")
    return L


def section_bnn(bn, results) -> list[str]:
    eager = (f"{fmt(bn['naive_eager_per_s'])} spectra/s (ratio {fmt(bn['ratio_same_n_eager'])}x)"
             if bn["eager_checked"] else "not run")
    return [f"cpu network (DUMMY weights), S = {bn['samples']}; the same {bn['n_naive']} spectra and the same noise "
            "through `Sampler.predict` (backbone once, head S times) and S full passes (backbone + one head sample "
            "each): compiled (`bench_core.compiled_naive`, one `tf.function` call per pass; the headline) and as "
            "shipped (`Sampler.predict_naive`, eager head calls).", "",
            "| quantity | value |", "|---|---|",
            f"| backbone once, {bn['n_naive']} spectra | {fmt(bn['once_per_s_same_n'])} spectra/s |",
            f"| S full passes, compiled, {bn['n_naive']} spectra | {fmt(bn['naive_per_s'])} spectra/s |",
            f"| S full passes, `Sampler.predict_naive`, {bn['n_naive']} spectra | {eager} |",
            f"| time ratio, same spectra (compiled full passes / backbone once) | {fmt(bn['ratio_same_n'])}x |",
            f"| backbone once, {bn['n_all']:,} spectra (production batches) | {fmt(bn['once_per_s'])} spectra/s |",
            f"| time ratio, production throughput vs S full passes | {fmt(bn['ratio_throughput'])}x |",
            f"| largest difference of the means (max abs dmean / sigma) | {bn['max_abs_dmean']:.3g} "
            f"({bn['max_dmean_over_sigma']:.3g}) |"]


def section_e2e(ee, results) -> list[str]:
    e, g, bf = ee["small"], ee["large"], ee["bfloat16"]
    L = ["The stage (`RedshiftStage.run`, FITS in -> FITS out, cpu network, DUMMY weights, "
         f"S = {ee['samples']}, chunk 4096) in one fresh process: set-up (TensorFlow import, reference files, "
         "network build, a warm-up run on a small product), then the first product, then the larger one. Peak RSS: "
         "the process's own peak so far after each product (`VmHWM`; `ru_maxrss` beside it): memory that grew with "
         "the file would show as a rise.", "",
         "| objects | spectra/s | run (s) | peak RSS after it, VmHWM (MiB) | ru_maxrss (MiB) |", "|---|---|---|---|---|"]
    for r in (e, g):
        L.append(f"| {r['n']:,} | {fmt(r['spectra_per_s'])} | {r['run_s']:.1f} | {r['vmhwm_mib']:,.0f} | "
                 f"{r['maxrss_mib']:,.0f} |")
    L += ["", f"With `--backbone-precision bfloat16` (a stage of its own in the same process, after the two above), "
              f"{bf['n']:,} objects: {fmt(bf['spectra_per_s'])} spectra/s, "
              f"{bf['spectra_per_s'] / e['spectra_per_s']:.2f}x the float32 run on the same file. It changes the "
              "numbers (docs/performance.md, \"bfloat16 backbone\").", "",
          f"Set-up {e['setup_s']:.1f} s; whole process {ee['process_wall_s']:.1f} s "
          f"({(e['n'] + g['n']) / ee['process_wall_s']:,.0f} spectra/s with start-up). Peak RSS ratio "
          f"{g['n']:,} / {e['n']:,} objects: {g['vmhwm_mib'] / e['vmhwm_mib']:.2f} (flat = 1). "
          f"`RUSAGE_CHILDREN` after the process: {ee['children_maxrss_mib']:,.0f} MiB (on Linux a ceiling that "
          "also holds this benchmark process's own peak, carried across execve; not the stage's peak)."]
    return L


def section_redrock(rr, results) -> list[str]:
    pd, pc = rr["peers"]["default"], rr["peers"]["coarse"]
    L = []
    if not rr["is_redrock"]:
        L += ["> **REDROCK COULD NOT BE IMPORTED: the peer below is the in-repo chi-square template fit "
              "(training/evaluate.py), not redrock.**", ""]
    L.append(f"Peer: {pd['method']} over z 0-1.6, {pd['procs']} process(es) (`benchmarks/redrock_peer.py`), twice: "
             f"with DESI's galaxy scan step dlog10(1+z) = {pd['dlog10z']:g} ({pd['n_redshifts']} trial redshifts) and "
             f"with a step {pc['dlog10z'] / pd['dlog10z']:g}x coarser ({pc['n_redshifts']}), still finer than an "
             f"R = 250 resolution element. Stage: {rr['stage_set']}. All on the same {rr['n']:,} spectra. "
             "Speeds exclude one-time set-up (network build; template rebinning).")
    if not rr["stage_trained"]:
        L += ["", "> The stage ran with an **untrained DUMMY network**: its accuracy numbers below are meaningless; "
                  "only redrock's are real."]
    L += ["", "| quantity | stage | redrock, DESI scan | redrock, coarse scan |", "|---|---|---|---|",
          f"| spectra/s (all cores) | {fmt(rr['stage_per_s'])} | {fmt(pd['per_s'])} | {fmt(pc['per_s'])} |",
          f"| spectra/s per core | {fmt(rr['stage_per_s_per_core'])} | {fmt(pd['per_s_per_core'])} | "
          f"{fmt(pc['per_s_per_core'])} |",
          f"| one-time set-up (s) | {rr['stage_setup_s']:.1f} | {pd['setup_s']:.1f} | {pc['setup_s']:.1f} |",
          f"| speed ratio stage / redrock | | {fmt(pd['speed_ratio'])}x | {fmt(pc['speed_ratio'])}x |",
          f"| speed ratio per core | | {fmt(pd['speed_ratio_per_core'])}x | {fmt(pc['speed_ratio_per_core'])}x |",
          "", "Accuracy on the same spectra (SNR_GI from the stage's catalogue; eta: |dz|/(1+z) > 0.02; "
              "ZWARN = 0: each method's own flags):", "",
          "| sample | n | stage sigma_NMAD / eta / ZWARN=0 | redrock DESI scan | redrock coarse scan |",
          "|---|---|---|---|---|"]

    def trio(r):
        return f"{fmt(r['sigma_nmad'], 3)} / {fmt(r['eta'], 3)} / {fmt(r['f_zwarn0'], 3)}"
    for a, b, c in zip(rr["stage_accuracy"], pd["accuracy"], pc["accuracy"]):
        L.append(f"| {a['bin']} | {a['n']:,} | {trio(a)} | {trio(b)} | {trio(c)} |")
    allrr = pd["accuracy"][0]
    L += ["", f"The paper's \"about 1% for traditional template fitting\", measured here: redrock sigma_NMAD "
              f"{fmt(allrr['sigma_nmad'], 3)}, eta {fmt(allrr['eta'], 3)} on {allrr['n']:,} spectra."]
    return L


def _from_module(module: str, function: str = "markdown", key=None):
    def section(res, results):
        import importlib
        render = getattr(importlib.import_module(f"benchmarks.{module}"), function)
        return render(res if key is None else res[key]).splitlines()
    return section


SECTIONS = {
    "matmul": ("Yardstick: dense matmul", section_matmul),
    "preprocess": ("Preprocessing", section_preprocess),
    "backbone": ("Backbone", section_backbone),
    "bnn": ("BNN sampling", section_bnn),
    "e2e": ("End to end", section_e2e),
    "refine_e2e": ("End to end with the template refinement", _from_module("bench_refine_e2e")),
    "memory": ("Memory as the input grows", _from_module("bench_memory")),
    "startup": ("Start-up", _from_module("bench_startup")),
    "fail_fast": ("Failing fast", _from_module("bench_fail_fast")),
    "head": ("BNN head variants", _from_module("bench_head", "report_head")),
    "refine": ("Template refinement", _from_module("bench_refine")),
    "simulation": ("Simulation", _from_module("bench_simulation", key="rows")),
    "redrock": ("Against redrock", section_redrock),
    "batch": ("Dask batch", _from_module("bench_batch")),
}


# ----------------------------------------------------------------------------- derived
def breakdown(results) -> dict | None:
    """Milliseconds per spectrum of each part, from the separate measurements of one run
    (None unless preprocess, backbone, bnn and e2e all ran)."""
    if not all(k in results for k in ("preprocess", "backbone", "bnn", "e2e")):
        return None
    pre = 1e3 / results["preprocess"]["numba_per_s"]
    bb = 1e3 / results["backbone"]["cpu"]["spectra_per_s"]
    bnn = 1e3 / results["bnn"]["once_per_s"]
    e2e = 1e3 / results["e2e"]["small"]["spectra_per_s"]
    out = {"preprocess": pre, "backbone": bb, "head": max(bnn - bb, 0.0), "bnn_total": bnn,
           "io_and_rest": max(e2e - pre - bnn, 0.0), "e2e": e2e}
    if "matmul" in results:     # the network's multiply-adds at the dense-matmul rate: no float32 code beats it
        flops = results["bnn"]["backbone_flops_per_spectrum"] + results["bnn"]["head_flops_per_spectrum"]
        out["floor"] = 1e3 * flops / (results["matmul"]["tf_gflops"] * 1e9)
    return out


def section_breakdown(bd, results) -> list[str]:
    L = ["Milliseconds per spectrum, from this run's separate measurements:", "",
         "| preprocess | backbone | BNN head (S samples) | I/O, quality, calibration, rest | end to end |",
         "|---|---|---|---|---|",
         f"| {bd['preprocess']:.3f} | {bd['backbone']:.3f} | {bd['head']:.3f} | {bd['io_and_rest']:.3f} | "
         f"{bd['e2e']:.3f} |"]
    if "floor" in bd:
        bn = results["bnn"]
        L += ["", f"Compute floor: the network's multiply-adds per spectrum, backbone "
                  f"{bn['backbone_flops_per_spectrum'] / 1e6:.1f} + head {bn['head_flops_per_spectrum'] / 1e6:.1f} "
                  f"MFLOP at S = {bn['samples']} (`bench_core.conv_macs`, `head_macs`), at this run's dense-matmul "
                  f"rate ({fmt(results['matmul']['tf_gflops'])} GFLOP/s) take {bd['floor']:.3f} ms: no float32 code "
                  f"on this machine exceeds {1.0 / bd['floor'] * 1e3:,.0f} spectra/s end to end, and the stage runs "
                  f"at {bd['floor'] / bd['e2e']:.0%} of that."]
    return L


def targets(results) -> list[tuple[str, str, bool, str]]:
    """(target, measured, met, why if missed) for each target whose benchmarks ran."""
    bd = breakdown(results)
    rows = []
    share = floor = ""
    if bd:
        part = max(("preprocess", "backbone", "head", "io_and_rest"), key=lambda k: bd[k])
        share = f"largest share: {part} ({bd[part]:.2f} of {bd['e2e']:.2f} ms/spectrum, table above)"
        floor = f"; the float32 compute floor is {1e3 / bd['floor']:,.0f} spectra/s" if "floor" in bd else ""
    if "e2e" in results:
        e = results["e2e"]
        rate = e["small"]["spectra_per_s"]
        rows.append((f"end to end >= {TARGETS['e2e']:,.0f} spectra/s", f"{fmt(rate)} spectra/s",
                     rate >= TARGETS["e2e"], share + floor))
        rows.append((f"end to end >= {TARGETS['e2e_progress']:,.0f} spectra/s (progress)",
                     f"{fmt(rate)} spectra/s; bfloat16 backbone {fmt(e['bfloat16']['spectra_per_s'])}",
                     rate >= TARGETS["e2e_progress"], share + floor))
    if bd:
        rows.append(("BNN head cheaper than the backbone per spectrum",
                     f"head {bd['head']:.3f} ms, backbone {bd['backbone']:.3f} ms", bd["head"] < bd["backbone"],
                     "the head's S samples are three (S N, 128-256) matmuls per layer pair"))
    if "bnn" in results:
        ratio = results["bnn"]["ratio_same_n"]
        why = (f"bounded by S(b+h)/(b+Sh): backbone {bd['backbone']:.3f} ms vs head x S {bd['head']:.3f} ms per "
               "spectrum") if bd else ""
        rows.append((f"BNN >= {TARGETS['bnn']:.0f}x faster than S full passes", f"{fmt(ratio)}x",
                     ratio >= TARGETS["bnn"], why))
    if "redrock" in results:
        rr = results["redrock"]
        pd, pc = rr["peers"]["default"], rr["peers"]["coarse"]
        rows.append((f">= {TARGETS['redrock']:.0f}x faster than redrock's DESI scan",
                     f"{fmt(pd['speed_ratio'])}x (coarse scan {fmt(pc['speed_ratio'])}x)",
                     pd["speed_ratio"] >= TARGETS["redrock"],
                     f"redrock {fmt(pd['per_s'])} spectra/s on {pd['procs']} process(es) vs the stage's "
                     f"{fmt(rr['stage_per_s'])}: the stage would need {TARGETS['redrock'] * pd['per_s']:,.0f} "
                     "spectra/s"))
    frac = fraction_of_matmul(results, "cpu")
    if frac is not None:
        paper = fraction_of_matmul(results, "paper")
        rows.append((f"backbone >= {TARGETS['backbone']:.0%} of matmul FLOP/s",
                     f"{frac:.0%} ({fmt(results['backbone']['cpu']['achieved_gflops'])} of "
                     f"{fmt(results['matmul']['tf_gflops'])} GFLOP/s)", frac >= TARGETS["backbone"],
                     f"narrow convolutions (16-128 channels) run below GEMM efficiency; the paper widths reach "
                     f"{paper:.0%}"))
    if "startup" in results:
        s = results["startup"]["to_first_chunk_s"]
        rows.append((f"start-up to the first processed chunk < {TARGETS['startup_s']:.0f} s", f"{s:.2f} s",
                     s < TARGETS["startup_s"], "importing TensorFlow is most of it (table above)"))
    if "fail_fast" in results:
        s = results["fail_fast"]["slowest_error_s"]
        rows.append((f"a wrong `run` command fails in < {TARGETS['fail_fast_s']:.0f} s", f"{s:.2f} s (slowest case)",
                     s < TARGETS["fail_fast_s"], "see the failing-fast table"))
    return rows


# ----------------------------------------------------------------------------- the page
def markdown(run: dict) -> str:
    """The results page of one run of the suite (``run``: what ``run_suite`` returns)."""
    results, quick = run["results"], run["quick"]
    L = ["# csst_sls_z performance results", ""]
    if quick:
        L += ["> **QUICK MODE** (`--quick`): every benchmark ran at a tiny size to show that it works. These "
              "numbers are meaningless for the targets; run without `--quick` for real ones.", ""]
    L += [f"Command: `{run['command']}`  ",
          f"Started {run['started']}; whole run {run['wall_s']:.0f} s. Benchmarks: {', '.join(results)}.", ""]
    L += machine(run["machine"], run.get("load_1min_end"))
    for name, res in results.items():
        title, render = SECTIONS[name]
        L += [f"## {title}", "", *render(res, results), ""]
    if run.get("failed"):
        L += ["## Failed", "", *(f"- `{name}`: {error}" for name, error in run["failed"].items()), ""]
    bd = breakdown(results)
    if bd:
        L += ["## Where the time goes", "", *section_breakdown(bd, results), ""]
    rows = targets(results)
    if rows:
        L += ["## Targets", "", "cpu network, S = 200, this machine.", "",
              "| target | measured | verdict | if missed, why |", "|---|---|---|---|"]
        note = " (quick mode: not a verdict)" if quick else ""
        for name, measured, ok, why in rows:
            L.append(f"| {name} | {measured} | {'pass' if ok else 'MISS'}{note} | {'' if ok else why} |")
        L.append("")
    return "\n".join(L)
