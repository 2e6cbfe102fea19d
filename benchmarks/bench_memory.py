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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def measure_memory(ws, sizes: list[int], warm: int, samples: int = 200) -> dict:
    """The stage (DUMMY cpu set) in one fresh process on products of each of ``sizes``, full output
    then catalogue only, after a warm-up on ``warm`` objects."""
    from benchmarks import bench_core
    refdir = ws.dummy_set("cpu")
    products = {n: ws.product(n) for n in sizes}
    out = ws.path("memory")
    jobs = [{"name": f"{mode}_{n}", "product": products[n], "out": out / f"out_{mode}_{n}.fits",
             "refdir": refdir, "catalog_only": mode == "catalog"}
            for mode in ("full", "catalog") for n in sizes]
    runs = bench_core.run_stage_subprocess(jobs, samples, warm=ws.product(warm, seed=101))
    rows = [{"output": "catalogue only" if job["catalog_only"] else "full (input copied)", **runs[job["name"]]}
            for job in jobs]
    return {"samples": samples, "sizes": sizes, "rows": rows,
            "input_mib": {n: products[n].stat().st_size / 2 ** 20 for n in sizes}}


def markdown(res: dict) -> str:
    lines = [f"stage, cpu network (DUMMY), S = {res['samples']}, chunk 4096; input sizes "
             + ", ".join(f"{n:,} objects = {res['input_mib'][n]:,.0f} MiB" for n in res["sizes"]), "",
             "| output | objects | spectra/s | peak RssAnon (MiB) | peak RssFile (MiB) | VmHWM so far (MiB) |",
             "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['output']} | {r['n']:,} | {r['spectra_per_s']:.0f} | {r['anon_peak_mib']:,.0f} | "
                     f"{r['file_peak_mib']:,.0f} | {r['vmhwm_mib']:,.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--sizes", default="10000,100000", help="comma-separated product sizes (objects)")
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--warm", type=int, default=600, help="objects in the warm-up product (traces the network)")
    p.add_argument("--workdir", type=Path, default=None, help="keep products here (reused by a rerun)")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    from benchmarks.workspace import Workspace
    with Workspace(args.workdir) as ws:
        res = measure_memory(ws, sizes, args.warm, args.samples)
    print()
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
