"""Does the stage's memory stay flat as the input grows? Anonymous and file-backed, apart.

    python benchmarks/bench_memory.py --sizes 10000,100000 --workdir /tmp/bench_memory

Runs the stage (cpu network, DUMMY weights, S = 200, chunk 4096) in one fresh process on
test-population products of each size, with the full output (the input's extensions copied
into the output) and with ``--catalog-only``, and reports for each run the peak of the
process's anonymous resident memory (``RssAnon``: heap, arrays, TensorFlow) and of its
file-backed resident memory (``RssFile``: pages of memory-mapped files, here chiefly the
input while it is copied), both sampled every 20 ms, beside ``VmHWM``. Anonymous memory is
what a job's memory limit must hold; mapped file pages are page cache that the kernel
reclaims under pressure.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--sizes", default="10000,100000", help="comma-separated product sizes (objects)")
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--warm", type=int, default=600, help="objects in the warm-up product (traces the network)")
    p.add_argument("--workdir", type=Path, default=None, help="keep products here (reused by a rerun)")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    import bench_core as bc
    from csst_sls_z.simulation import load_models, simulate_products
    from csst_sls_z.training.dummy import write_dummy_set
    tmp = tempfile.TemporaryDirectory(prefix="bench_memory_") if args.workdir is None else None
    work = Path(tmp.name if tmp else args.workdir)
    try:
        work.mkdir(parents=True, exist_ok=True)
        refdir = work / "refs_dummy_cpu"
        if not (refdir / "manifest.json").is_file():
            write_dummy_set(refdir, network="cpu")
        instrument, sedlib, _ = load_models()
        products = {}
        for n in [args.warm] + sizes:
            d = work / f"in_{n}"
            existing = sorted(d.glob("*.fits")) if d.is_dir() else []
            if existing:
                products[n] = existing[0]
            else:
                d.mkdir(parents=True, exist_ok=True)
                (products[n],) = simulate_products(n, 300 + n % 97, "test", n, d, instrument, sedlib,
                                                   progress=False, overwrite=True)
        jobs = [{"name": f"{mode}_{n}", "product": products[n], "out": work / f"out_{mode}_{n}.fits",
                 "refdir": refdir, "catalog_only": mode == "catalog"}
                for mode in ("full", "catalog") for n in sizes]
        runs = bc.run_stage_subprocess(jobs, args.samples, warm=products[args.warm])
        print(f"\nstage, cpu network (DUMMY), S = {args.samples}, chunk 4096; input sizes "
              + ", ".join(f"{n:,} objects = {products[n].stat().st_size / 2**20:,.0f} MiB" for n in sizes) + "\n")
        print("| output | objects | spectra/s | peak RssAnon (MiB) | peak RssFile (MiB) | VmHWM so far (MiB) |")
        print("|---|---|---|---|---|---|")
        for job in jobs:
            r = runs[job["name"]]
            mode = "catalogue only" if job["catalog_only"] else "full (input copied)"
            print(f"| {mode} | {r['n']:,} | {r['spectra_per_s']:.0f} | {r['anon_peak_mib']:,.0f} | "
                  f"{r['file_peak_mib']:,.0f} | {r['vmhwm_mib']:,.0f} |")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
