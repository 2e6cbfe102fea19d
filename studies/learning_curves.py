"""Learning curves of backbone variants at an equal CPU budget, on the same data stream.

    python studies/learning_curves.py --out docs/learning_curves --workdir work/learning_curves

Each arm trains one backbone variant through the regeneration code (``train_backbone``) on the
training set of the ``cpu`` regeneration (0006's recipe: 300,000 objects, three SED families,
the instrument variations), from the same batch seed, evaluated on the same validation set
(the same objects and the same noise). An arm's budget is CPU seconds of its process
(``--budget-cpu-s``, default 2,400: twenty minutes of both cores), not wall seconds, so that
every arm gets the same work on a shared machine; wall time is recorded beside it.

Arms (``ARMS``; each changes one thing from ``base`` unless its note says otherwise):

* ``base``: the ``cpu_ln`` backbone of 0005/0006 (widths 16-128, 640 bins in ln(1 + z),
  labels smoothed one bin wide, Adam 1e-3 with a cosine decay, batch 256, 913 input pixels);
* ``small``: widths 8-64 and a 16-filter stem, about 4x fewer FLOPs per spectrum;
* ``wide``: widths 24-192 and a 48-filter stem, about 2.2x more;
* ``coarse``: the input grid two times coarser (456 pixels: 14.2 A in GV, 17 A in GI, about
  two pixels per resolution element of R ~ 250 in GI, 1.5 in GV): the noisy spectra on
  today's grid rebinned in pairs (``BatchMaker(grid_rebin=2)``, the inverse-variance mean that
  the stage's resampling onto the coarse wavegrid gives; the results in docs/training.md were
  measured with the equal-weight mean of commit b380663);
* ``hard``: one-hot bin targets instead of labels smoothed by a Gaussian one bin wide;
* ``onecycle``: the schedule and optimiser together: one-cycle (warm-up over 30% to a peak
  of 2e-3, then cosine) with AdamW (weight decay 1e-4).

Mixed-precision bfloat16 training is not an arm: ``bf16_supported()`` reads the CPU flags
and the study records them (this kind of machine has AVX2 only: no AVX512-BF16 or AMX, so
bfloat16 matmuls are emulated); ``--bf16-rate`` measures the step rate under Keras's
``mixed_bfloat16`` policy against float32 so the claim has a number.

Reported per arm: validation eta and sigma_NMAD against CPU minutes, wall minutes and
samples seen; FLOPs per spectrum (forward, counted from the layer shapes); training samples
per CPU second; the backbone's inference rate (``FrozenBackbone``, float32, batch 512) and
the end-to-end rate it implies for the stage without refinement, given the measured end-to-end
and backbone rates of ``base`` (``--e2e-base``, spectra/s, from ``benchmarks/bench_refine_e2e.py``
``--no-refine`` on the same machine).

The winner's rule, fixed before the runs: the lowest validation eta at the end of the
budget among arms whose implied end-to-end rate is at least 1,000 spectra/s; within 0.5
points, the lower sigma_NMAD.

Resumable: an arm with ``result.json`` in the work directory is done; an interrupted arm
resumes from its checkpoint. ``--out`` gets ``curves.json``, ``curves.md`` and
``learning_curves.png`` after every arm.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

log = logging.getLogger("learning_curves")

ARMS = {
    "base": {"note": "cpu_ln as in 0005/0006"},
    "small": {"cfg": {"widths": (8, 8, 16, 16, 32, 32, 64, 64), "stem_filters": 16},
              "note": "widths 8-64, stem 16"},
    "coarse": {"rebin": 2, "note": "input grid 2x coarser (456 pixels)"},
    "hard": {"extra": {"label_sigma_bins": 0.0}, "note": "one-hot bin targets"},
    "onecycle": {"train": {"schedule": "onecycle", "optimizer": "adamw", "lr": 2e-3},
                 "note": "one-cycle to 2e-3 with AdamW (wd 1e-4)"},
    "wide": {"cfg": {"widths": (24, 24, 48, 48, 96, 96, 192, 192), "stem_filters": 48},
             "note": "widths 24-192, stem 48"},
}
WINNER_MIN_E2E = 1000.0        # spectra/s, end to end without refinement
WINNER_ETA_TIE = 0.005         # within 0.5 points of eta, the lower sigma_NMAD wins


def arm_config(base_cfg, arm: dict, band_sizes):
    """The arm's NetworkConfig: ``cfg`` fields replaced, ``extra`` merged, the input length rebinned."""
    cfg = replace(base_cfg, name=f"{base_cfg.name}", **arm.get("cfg", {}))
    if arm.get("extra"):
        cfg = replace(cfg, extra={**cfg.extra, **arm["extra"]})
    rebin = arm.get("rebin", 1)
    if rebin > 1:
        cfg = replace(cfg, input_length=int(sum(n // rebin for n in band_sizes)))
    return cfg


def forward_flops(cfg) -> float:
    """Multiply-adds x 2 of one forward pass of ``build_backbone(cfg)`` (convolutions and output layer)."""
    length = cfg.input_length
    flops = 2.0 * length * cfg.kernel * 2 * cfg.stem_filters
    length //= 2
    c_in = cfg.stem_filters
    for i, width in enumerate(cfg.widths):
        stride = 2 if i % 2 == 1 else 1
        out = -(-length // stride)
        flops += 2.0 * out * cfg.kernel * c_in * width + 2.0 * out * cfg.kernel * width * width
        if stride == 2 or c_in != width:
            flops += 2.0 * out * c_in * width
        length, c_in = out, width
    return flops + 2.0 * c_in * cfg.n_bins


def inference_rate(model, cfg, x, seconds: float = 8.0, batch: int = 512) -> float:
    """Spectra/s of ``FrozenBackbone`` (float32) on ``x``, after one warm-up pass."""
    import tensorflow as tf
    from csst_sls_z.network.backbone import FrozenBackbone
    frozen = FrozenBackbone(model, cfg)
    batch = min(batch, x.shape[0])
    fn = tf.function(lambda v: frozen(v)[1], reduce_retracing=True)
    xs = [tf.constant(x[s:s + batch]) for s in range(0, x.shape[0] - batch + 1, batch)]
    for v in xs:
        fn(v).numpy()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for v in xs:
            fn(v).numpy()
            n += batch
    return n / (time.perf_counter() - t0)


def bf16_supported() -> dict:
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {"avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags, "avx2": "avx2" in flags}


def bf16_step_rate(cfg, maker, batch_size: int, steps: int = 30) -> dict:
    """Training samples/s under float32 and under Keras's mixed_bfloat16 policy (short, same batches)."""
    import keras
    from csst_sls_z.training.train_backbone import make_train_step, split_batch, training_strategy
    from csst_sls_z.network.backbone import build_backbone
    import tensorflow as tf
    batches = [next(maker.stream(batch_size)) for _ in range(4)]
    out = {}
    for policy in ("float32", "mixed_bfloat16"):
        keras.mixed_precision.set_global_policy(policy)
        try:
            strategy = training_strategy()
            model = build_backbone(cfg)
            opt = tf.keras.optimizers.Adam(1e-3)
            opt.build(model.trainable_variables)
            step = make_train_step(model, opt, cfg, strategy)
            for b in batches[:2]:
                step(split_batch(strategy, *b))
            t0 = time.perf_counter()
            for i in range(steps):
                float(step(split_batch(strategy, *batches[i % len(batches)])))
            out[policy] = steps * batch_size / (time.perf_counter() - t0)
        finally:
            keras.mixed_precision.set_global_policy("float32")
    return out


def run_arm(name, arm, regen, data, base_cfg, budget_cpu_s, eval_every_s, workdir: Path, progress) -> dict:
    from csst_sls_z.training.train_backbone import train_backbone
    band_sizes = [sl.stop - sl.start for sl in data["train"].band_slices]
    cfg = arm_config(base_cfg, arm, band_sizes)
    from csst_sls_z.training.data import BatchMaker
    rebin = arm.get("rebin", 1)
    x_val, z_val = BatchMaker(data["val"], seed=regen.seeds["val"] + 17, grid_rebin=rebin).fixed()
    maker = BatchMaker(data["train"], seed=regen.seeds["batches"], grid_rebin=rebin)
    train = {"lr": 1e-3, "schedule": "cosine", "optimizer": "adam", **arm.get("train", {})}
    load0 = os.getloadavg()[0]
    model, history = train_backbone(cfg, maker.stream(regen.rc.batch_size), x_val, z_val, budget_cpu_s,
                                    workdir / f"arm_{name}", batch_size=regen.rc.batch_size,
                                    eval_every_s=eval_every_s, progress=progress, clock=time.process_time,
                                    **train)
    rate = inference_rate(model, cfg, x_val[:2048])
    last = history[-1]
    return {"arm": name, "note": arm.get("note", ""), "config": cfg.to_dict(), "train": train,
            "rebin": arm.get("rebin", 1), "history": history, "flops_per_spectrum": forward_flops(cfg),
            "samples_per_cpu_s": last["samples"] / last["cpu_s"], "samples_per_wall_s": last["samples"] / last["wall_s"],
            "backbone_inference_per_s": rate, "load_avg_1min_start": load0, "load_avg_1min_end": os.getloadavg()[0]}


def implied_e2e(res: dict, e2e_base: float | None) -> dict:
    """Arm -> end-to-end spectra/s: base's measured rate with base's backbone time swapped for the arm's."""
    if not e2e_base or "base" not in res["arms"]:
        return {}
    rest = 1.0 / e2e_base - 1.0 / res["arms"]["base"]["backbone_inference_per_s"]
    return {k: 1.0 / (rest + 1.0 / a["backbone_inference_per_s"]) for k, a in res["arms"].items()}


def winner(res: dict, e2e: dict):
    ok = [k for k, a in res["arms"].items() if e2e.get(k, 0.0) >= WINNER_MIN_E2E]
    if not ok:
        return None
    best_eta = min(res["arms"][k]["history"][-1]["eta"] for k in ok)
    near = [k for k in ok if res["arms"][k]["history"][-1]["eta"] <= best_eta + WINNER_ETA_TIE]
    return min(near, key=lambda k: res["arms"][k]["history"][-1]["sigma_nmad"])


def table(res: dict) -> str:
    e2e = implied_e2e(res, res.get("e2e_base"))
    lines = [f"Budget {res['budget_cpu_s']:.0f} CPU seconds per arm ({res['budget_cpu_s'] / 120:.0f} minutes of both "
             f"cores), {res['n_train']:,} training objects, {res['n_val']:,} validation objects (flat z), batch "
             f"{res['batch_size']}, {res['machine']}, TensorFlow {res['tensorflow']}.", "",
             "| arm | change | FLOPs/spectrum (M) | samples seen | samples per CPU s | wall min | val sigma_NMAD "
             "| val eta | backbone inference /s | implied end to end /s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for k, a in res["arms"].items():
        last = a["history"][-1]
        lines.append(f"| {k} | {a['note']} | {a['flops_per_spectrum'] / 1e6:.1f} | {last['samples']:,} | "
                     f"{a['samples_per_cpu_s']:.0f} | {last['wall_s'] / 60:.1f} | {last['sigma_nmad']:.5f} | "
                     f"{100 * last['eta']:.2f}% | {a['backbone_inference_per_s']:.0f} | "
                     f"{e2e[k]:.0f} |" if k in e2e else
                     f"| {k} | {a['note']} | {a['flops_per_spectrum'] / 1e6:.1f} | {last['samples']:,} | "
                     f"{a['samples_per_cpu_s']:.0f} | {last['wall_s'] / 60:.1f} | {last['sigma_nmad']:.5f} | "
                     f"{100 * last['eta']:.2f}% | {a['backbone_inference_per_s']:.0f} | - |")
    w = winner(res, e2e)
    lines += ["", f"Winner by the rule fixed before the runs: **{w}**." if w else
              "", "", "Validation eta against CPU minutes (every evaluation):", "",
              "| arm | " + " | ".join(["CPU min / samples / sigma_NMAD / eta"]) + " |", "|---|---|"]
    for k, a in res["arms"].items():
        pts = "; ".join(f"{h['elapsed_s'] / 60:.0f} / {h['samples'] / 1e6:.2f}M / {h['sigma_nmad']:.4f} / "
                        f"{100 * h['eta']:.1f}%" for h in a["history"])
        lines.append(f"| {k} | {pts} |")
    if res.get("bf16"):
        b = res["bf16"]
        lines += ["", f"bfloat16 training: CPU flags {b['flags']}; step rate float32 {b['rate']['float32']:.0f} "
                      f"samples/s, mixed_bfloat16 {b['rate']['mixed_bfloat16']:.0f} samples/s."]
    return "\n".join(lines) + "\n"


def figure(res: dict, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for k, a in res["arms"].items():
        h = a["history"]
        cpu_min = [p["elapsed_s"] / 60 for p in h]
        axes[0].plot(cpu_min, [100 * p["eta"] for p in h], "o-", ms=3, label=k)
        axes[1].plot([p["samples"] / 1e6 for p in h], [100 * p["eta"] for p in h], "o-", ms=3, label=k)
        axes[2].plot(cpu_min, [p["sigma_nmad"] for p in h], "o-", ms=3, label=k)
    axes[0].set(xlabel="CPU minutes of the training process", ylabel="validation eta (%)")
    axes[1].set(xlabel="training samples seen (millions)", ylabel="validation eta (%)")
    axes[2].set(xlabel="CPU minutes of the training process", ylabel="validation sigma_NMAD", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Backbone arms at an equal budget of {res['budget_cpu_s']:.0f} CPU seconds, same data stream")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_outputs(res: dict, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    (out / "curves.json").write_text(json.dumps(res, indent=1, default=float))
    (out / "curves.md").write_text(table(res))
    if res["arms"]:
        figure(res, out / "learning_curves.png")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--out", type=Path, required=True, help="directory for curves.json, curves.md and the figure")
    p.add_argument("--workdir", type=Path, required=True, help="checkpoints and finished arms (resumable)")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated arms, in order (default {','.join(ARMS)})")
    p.add_argument("--budget-cpu-s", type=float, default=2400.0, help="CPU seconds per arm (default 2400)")
    p.add_argument("--eval-every-cpu-s", type=float, default=150.0, help="CPU seconds between validation points")
    p.add_argument("--n-train", type=int, default=300_000, help="training objects (default 300,000, as 0006)")
    p.add_argument("--n-val", type=int, default=6000, help="validation objects (default 6,000)")
    p.add_argument("--e2e-base", type=float, default=None,
                   help="measured end-to-end spectra/s of the stage with base's network, --no-refine")
    p.add_argument("--bf16-rate", action="store_true", help="also measure bfloat16 mixed-precision step rates")
    p.add_argument("--report-only", action="store_true", help="rewrite the outputs from finished arms; train nothing")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    names = [a for a in args.arms.split(",") if a]
    unknown = [a for a in names if a not in ARMS]
    if unknown:
        print(f"learning_curves: error: unknown arm(s) {', '.join(unknown)} (known: {', '.join(ARMS)})", file=sys.stderr)
        return 1
    args.workdir.mkdir(parents=True, exist_ok=True)
    import tensorflow as tf
    res = {"budget_cpu_s": args.budget_cpu_s, "n_train": args.n_train, "n_val": args.n_val, "batch_size": 256,
           "e2e_base": args.e2e_base, "tensorflow": tf.__version__,
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "arms": {}}
    done = {a: json.loads((args.workdir / f"arm_{a}" / "result.json").read_text()) for a in names
            if (args.workdir / f"arm_{a}" / "result.json").exists()}
    res["arms"].update(done)
    if (args.workdir / "bf16.json").exists():
        res["bf16"] = json.loads((args.workdir / "bf16.json").read_text())
    todo = [a for a in names if a not in done]
    if args.report_only or (not todo and not (args.bf16_rate and "bf16" not in res)):
        write_outputs(res, args.out)
        sys.stdout.write(table(res))
        return 0 if res["arms"] else 3
    from csst_sls_z.training.regenerate import Regeneration, configure_tf
    configure_tf()
    regen = Regeneration("cpu", args.workdir / "regen", progress=not args.no_progress,
                         overrides={"n_train": args.n_train, "n_val": args.n_val, "n_test": 200})
    data = regen.data()
    for name in todo:
        log.info("arm %s: %s", name, ARMS[name].get("note", ""))
        result = run_arm(name, ARMS[name], regen, data, regen.cfg, args.budget_cpu_s, args.eval_every_cpu_s,
                         args.workdir, not args.no_progress)
        (args.workdir / f"arm_{name}" / "result.json").write_text(json.dumps(result, indent=1, default=float))
        res["arms"][name] = result
        write_outputs(res, args.out)
    if args.bf16_rate and "bf16" not in res:
        from csst_sls_z.training.data import BatchMaker
        maker = BatchMaker(data["train"], seed=1)
        res["bf16"] = {"flags": bf16_supported(), "rate": bf16_step_rate(regen.cfg, maker, 256)}
        (args.workdir / "bf16.json").write_text(json.dumps(res["bf16"], indent=1))
    res["arms"] = {a: res["arms"][a] for a in names if a in res["arms"]}
    write_outputs(res, args.out)
    sys.stdout.write(table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
