"""The stage end to end with and without the template refinement, alternated in one process.

    csst-sls-z simulate --n 10000 --seed 5 --population test --per-file 10000 --out /tmp/spd
    python benchmarks/bench_refine_e2e.py /tmp/spd/sim_test_s5_0000.fits [--repeats 2] \
        [--reference-dir SET --reference-dir SET2]

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
    ``no_refine`` (``network``), each ``repeats`` times, alternated, after one warm-up run each.
    ``reference_dir`` may be a list of sets: every set's two variants are then alternated
    (keys ``<set> refined`` / ``<set> network``) so their rates compare within one run."""
    from csst_sls_z.products import open_product
    from csst_sls_z.stage import RedshiftStage
    with open_product(product) as reader:
        n = reader.n_objects
    several = isinstance(reference_dir, (list, tuple))
    stages = {}
    for refdir in (reference_dir if several else [reference_dir]):
        prefix = f"{Path(refdir).name} " if several else ""
        stages[prefix + "refined"] = RedshiftStage(overwrite=True, reference_dir=refdir)
        stages[prefix + "network"] = RedshiftStage(overwrite=True, no_refine=True, reference_dir=refdir)
    for i, (name, stage) in enumerate(stages.items()):
        stage.run([product], work / f"warm_{i}.fits")
    rates = {name: [] for name in stages}
    for _ in range(repeats):
        for i, (name, stage) in enumerate(stages.items()):
            t0 = time.perf_counter()
            stage.run([product], work / f"run_{i}.fits")
            rates[name].append(n / (time.perf_counter() - t0))
    out = {"n": n, "repeats": repeats, "spectra_per_s": rates}
    if not several:
        out["refined_over_network"] = sum(rates["refined"]) / sum(rates["network"])
    return out


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
    if "refined_over_network" in res:
        lines.append(f"refined / network: {res['refined_over_network']:.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("product", type=Path)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--reference-dir", type=Path, action="append", default=None, metavar="SET",
                   help="reference set (default: the shipped one); give it twice or more to compare sets "
                        "in one run")
    args = p.parse_args(argv)
    refdirs = args.reference_dir
    refdir = refdirs if refdirs and len(refdirs) > 1 else (refdirs[0] if refdirs else None)
    res = measure(args.product, args.repeats, Path(tempfile.mkdtemp(prefix="bench_refine_e2e_")), refdir)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
