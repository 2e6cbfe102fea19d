"""The two backbone objectives at equal training time, on the same data, in one run.

    python studies/objective_curves.py --budget-s 600 --n-train 100000 --out docs/objective_curves

Trains the ``cpu`` backbone twice through the regeneration code (``train_backbone``, the
same batches from the same seed, the same validation set, the same cosine schedule over
the same wall-clock budget), once as a softmax over redshift bins (``zbins``) and once as
the paper's log-cosh regression (``logcosh``), one after the other on an otherwise idle
machine. Writes ``curves.json``, ``curves.md`` (validation sigma_NMAD and eta against
minutes and samples seen) and ``objective_curves.png`` into ``--out``.

Validation metrics use the flat-z validation set of the training population, noise fixed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OBJECTIVES = ("zbins", "logcosh")


def run(budget_s: float, n_train: int, n_val: int, eval_every_s: float, workdir: Path, seed: int = 20241125,
        progress: bool = True) -> dict:
    from csst_sls_z.training.data import BatchMaker
    from csst_sls_z.training.regenerate import Regeneration, configure_tf
    from csst_sls_z.training.train_backbone import train_backbone
    regen = Regeneration("cpu", workdir, progress=progress,
                         overrides={"n_train": n_train, "n_val": n_val, "n_test": 200, "seed": seed})
    t0 = time.time()
    data = regen.data()
    simulate_s = time.time() - t0
    tf = configure_tf()
    x_val, z_val = BatchMaker(data["val"], seed=regen.seeds["val"] + 17).fixed()
    curves = {}
    for objective in OBJECTIVES:
        cfg = replace(regen.cfg, objective=objective)
        maker = BatchMaker(data["train"], seed=regen.seeds["batches"])
        load0 = os.getloadavg()[0]
        _, history = train_backbone(cfg, maker.stream(regen.rc.batch_size), x_val, z_val, budget_s,
                                    workdir / f"backbone_{objective}", batch_size=regen.rc.batch_size,
                                    eval_every_s=eval_every_s, progress=progress)
        curves[objective] = {"history": history, "load_avg_1min_start": load0,
                             "load_avg_1min_end": os.getloadavg()[0]}
    return {"budget_s": budget_s, "n_train": n_train, "n_val": n_val, "batch_size": regen.rc.batch_size,
            "seed": seed, "simulate_s": simulate_s, "tensorflow": tf.__version__,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "curves": curves}


def table(res: dict) -> str:
    lines = [f"Equal budget {res['budget_s'] / 60:.1f} min per objective, {res['n_train']:,} training objects, "
             f"{res['n_val']:,} validation objects, batch {res['batch_size']}, {res['machine']}.", "",
             "| objective | minutes | samples seen | val sigma_NMAD | val eta |", "|---|---|---|---|---|"]
    for objective, c in res["curves"].items():
        for h in c["history"]:
            lines.append(f"| {objective} | {h['elapsed_s'] / 60:.1f} | {h['samples']:,} | "
                         f"{h['sigma_nmad']:.5f} | {100 * h['eta']:.2f}% |")
    lines += ["", "| objective | final val sigma_NMAD | final val eta | samples/s | 1-min load start / end |",
              "|---|---|---|---|---|"]
    for objective, c in res["curves"].items():
        last = c["history"][-1]
        lines.append(f"| {objective} | {last['sigma_nmad']:.5f} | {100 * last['eta']:.2f}% | "
                     f"{last['samples'] / last['elapsed_s']:.0f} | {c['load_avg_1min_start']:.1f} / "
                     f"{c['load_avg_1min_end']:.1f} |")
    return "\n".join(lines) + "\n"


def figure(res: dict, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for objective, c in res["curves"].items():
        t = [h["elapsed_s"] / 60 for h in c["history"]]
        axes[0].plot(t, [h["sigma_nmad"] for h in c["history"]], "o-", label=objective)
        axes[1].plot(t, [100 * h["eta"] for h in c["history"]], "o-", label=objective)
    for ax, label in zip(axes, ("validation sigma_NMAD", "validation eta (%)")):
        ax.set(xlabel="training wall time (min), equal budgets", ylabel=label, yscale="log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("cpu backbone: softmax over z bins vs log-cosh regression, same data and schedule")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--budget-s", type=float, default=600.0, help="training wall time per objective (default 600)")
    p.add_argument("--n-train", type=int, default=100_000, help="training objects (default 100,000)")
    p.add_argument("--n-val", type=int, default=4000, help="validation objects (default 4,000)")
    p.add_argument("--eval-every-s", type=float, default=60.0, help="seconds between validation points")
    p.add_argument("--out", type=Path, required=True, help="directory for curves.json, curves.md and the figure")
    p.add_argument("--workdir", type=Path, default=None, help="checkpoints here (default: a temporary directory)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        res = run(args.budget_s, args.n_train, args.n_val, args.eval_every_s, workdir, progress=not args.no_progress)
    (args.out / "curves.json").write_text(json.dumps(res, indent=1))
    (args.out / "curves.md").write_text(table(res))
    figure(res, args.out / "objective_curves.png")
    sys.stdout.write(table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
