"""The stage end to end with and without the template refinement, alternated in one process.

    csst-sls-z simulate --n 10000 --seed 5 --population test --per-file 10000 --out /tmp/spd
    python benchmarks/bench_refine_e2e.py /tmp/spd/sim_test_s5_0000.fits [--repeats 2]

Each variant is a stage of its own (default set; ``--no-refine`` for the network alone), warmed
up once on the same file, then timed on ``run()``; spectra/s per repeat. Report ratios within one run.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def measure(product: Path, repeats: int, work: Path, reference_dir=None) -> dict:
    """spectra/s of the stage on ``product`` with its refinement (``refined``) and with
    ``no_refine`` (``network``), each ``repeats`` times, alternated, after one warm-up run each."""
    from csst_sls_z.products import open_product
    from csst_sls_z.stage import RedshiftStage
    with open_product(product) as reader:
        n = reader.n_objects
    stages = {"refined": RedshiftStage(overwrite=True, reference_dir=reference_dir),
              "network": RedshiftStage(overwrite=True, no_refine=True, reference_dir=reference_dir)}
    for name, stage in stages.items():
        stage.run([product], work / f"warm_{name}.fits")
    rates = {name: [] for name in stages}
    for _ in range(repeats):
        for name, stage in stages.items():
            t0 = time.perf_counter()
            stage.run([product], work / f"{name}.fits")
            rates[name].append(n / (time.perf_counter() - t0))
    return {"n": n, "repeats": repeats, "spectra_per_s": rates,
            "refined_over_network": sum(rates["refined"]) / sum(rates["network"])}


def measure_refine_e2e(ws, n: int, repeats: int) -> dict:
    """The suite's benchmark: :func:`measure` on the workspace's product of ``n`` objects, with the
    set the accuracy comparisons use (``--reference-dir``, else the shipped one)."""
    refdir, trained, label = ws.shipped_set()
    res = measure(ws.product(n), repeats, ws.path("refine_e2e"), refdir)
    return {"set": label, "trained": trained, **res}


def markdown(res: dict) -> str:
    lines = [f"{name}: " + ", ".join(f"{v:,.0f}" for v in r) + " spectra/s"
             for name, r in res["spectra_per_s"].items()]
    if "set" in res:
        lines.insert(0, f"The stage with {res['set']}, {res['n']:,} objects, {res['repeats']} repeat(s):\n")
    lines.append(f"refined / network: {res['refined_over_network']:.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("product", type=Path)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    res = measure(args.product, args.repeats, Path(tempfile.mkdtemp(prefix="bench_refine_e2e_")))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
