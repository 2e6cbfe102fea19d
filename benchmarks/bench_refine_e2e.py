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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("product", type=Path)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    from csst_sls_z.products import open_product
    from csst_sls_z.stage import RedshiftStage
    with open_product(args.product) as reader:
        n = reader.n_objects
    out = Path(tempfile.mkdtemp(prefix="bench_refine_e2e_"))
    stages = {"refined": RedshiftStage(overwrite=True), "network": RedshiftStage(overwrite=True, no_refine=True)}
    for name, stage in stages.items():
        stage.run([args.product], out / f"warm_{name}.fits")
    rates = {name: [] for name in stages}
    for _ in range(args.repeats):
        for name, stage in stages.items():
            t0 = time.perf_counter()
            stage.run([args.product], out / f"{name}.fits")
            rates[name].append(n / (time.perf_counter() - t0))
    for name, r in rates.items():
        print(f"{name}: " + ", ".join(f"{v:,.0f}" for v in r) + " spectra/s")
    print(f"refined / network: {sum(rates['refined']) / sum(rates['network']):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
