"""Speed of the template refinement after the network (``csst_sls_z.refine``).

Simulates one product of ``--n`` objects (test population; ``--families`` as ``simulate``), reads it
in chunks of ``--chunk-size`` as the stage does, and refines every chunk with the refinement model
built from the reference set's SED library and instrument (``training.refine_basis``; or
``--refinement FILE``). The network's p(z) and Z are either

* synthetic (default, no TensorFlow): a main peak at the true ln(1+z) moved by N(0, 0.004), sigma
  0.004-0.012, holding 0.5-1 of the probability; a second peak 0.02-0.3 away for 48% of the objects,
  a third for half of those, a fourth for a quarter of those (the window counts the stage's
  csst_sls_z_0006 p(z) gives on the simulator's test population: 52/24/18/6% with 1/2/3/4 windows);
  Z is the main peak's centre; or
* ``--catalog OUT.fits``: the Z and PZ columns of the stage's output for that same product
  (``--product IN.fits`` then names it instead of simulating one).

Measured (the kernels compiled and cached by a warm-up chunk first, timed apart):

* spectra/s of ``refine`` with one thread and with every usable core (wall time), and the CPU
  seconds per spectrum of the one-thread run;
* chi2 evaluations per object (in units of one over all its pixels), windows per object;
* spectra/s of ``intervals`` (recomputing the posterior summaries at a temperature);
* with ``--full``: the note's full method (every width at every coarse z at 1e-3, fine 1e-4 over
  +-0.004) on the first ``--n-full`` objects, for the speed ratio.

The full run (docs quote it):

    python benchmarks/bench_refine.py --n 2000 --full

A quick check that it works (seconds):

    python benchmarks/bench_refine.py --quick
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The note's measured configuration (/work/shared/design/refinement.md, "the method that worked").
FULL_METHOD = dict(coarse_width=-1, coarse_step=1e-3, coarse_bin=1, fine_step=1e-4, fine_half=4e-3, parabola_steps=1,
                   minimum_margin=1e30, profile_minima=2, profile_rounds=1)


def synthetic_pz(z_true, grid, seed: int):
    """(pz (n, nbin), Z (n,)): a p(z) like the network's around each truth (module doc)."""
    rng = np.random.default_rng([seed, 11])
    n = z_true.size
    x = grid.coordinates() if grid.space == "ln1pz" else np.log1p(grid.coordinates())
    s_true = np.log1p(z_true)
    centre = s_true + rng.normal(0.0, 0.004, n)
    pz = np.zeros((n, grid.nbin))
    n_peaks = 1 + (rng.random(n) < 0.48) * (1 + (rng.random(n) < 0.5) * (1 + (rng.random(n) < 0.25)))
    main_mass = rng.uniform(0.5, 1.0, n)
    for k in range(n):
        sig = rng.uniform(0.004, 0.012)
        pz[k] += main_mass[k] * np.exp(-0.5 * ((x - centre[k]) / sig) ** 2) / sig
        rest = 1.0 - main_mass[k]
        for _ in range(n_peaks[k] - 1):
            c = centre[k] + rng.choice([-1.0, 1.0]) * rng.uniform(0.02, 0.3)
            sig2 = rng.uniform(0.003, 0.01)
            m = rest * rng.uniform(0.3, 0.8) if n_peaks[k] > 2 else rest
            pz[k] += max(m, 0.03) * np.exp(-0.5 * ((x - c) / sig2) ** 2) / sig2
        pz[k] += 1e-4 * pz[k].max()
    pz /= pz.sum(axis=1, keepdims=True)
    return pz, np.expm1(centre)


def catalog_pz(path, n):
    from astropy.io import fits
    from csst_sls_z.pz import PzGrid
    with fits.open(path) as hdul:
        tab = hdul["SLS_REDSHIFT"]
        grid = PzGrid.from_header(tab.header)
        return grid, np.asarray(tab.data["PZ"][:n], float), np.asarray(tab.data["Z"][:n], float)


def refine_product(path, pz, z_net, grid, model, chunk_size: int, threads: int):
    """Refine every chunk of the product; (Refinement, seconds in refine, seconds reading, CPU seconds)."""
    from csst_sls_z import refine as R
    from csst_sls_z.products.reader import open_product
    parts, t_refine, t_read, cpu = [], 0.0, 0.0, 0.0
    with open_product(path) as reader:
        t0 = time.perf_counter()
        for sl, bands in reader.iter_chunks(chunk_size, prefetch=False):
            t1 = time.perf_counter()
            t_read += t1 - t0
            c0 = time.process_time()
            parts.append(R.refine(bands, pz[sl], grid, z_net[sl], model, threads=threads))
            cpu += time.process_time() - c0
            t0 = time.perf_counter()
            t_refine += t0 - t1
    return R.concatenate(parts), t_refine, t_read, cpu


def run(args) -> dict:
    from csst_sls_z import refine as R
    from csst_sls_z.pz import PzGrid
    from csst_sls_z.simulation import FamilySet, load_models, simulate_products
    from csst_sls_z.training.refine_basis import build_refinement_model
    import numba
    instrument, sedlib, refset = load_models(args.reference_dir)
    if args.refinement:
        from csst_sls_z.reffiles.refinement import load_refinement
        model = load_refinement(args.refinement)
    else:
        model = build_refinement_model(sedlib, instrument)
    t0 = time.perf_counter()
    model.templates                                       # broadened once per model (load time)
    t_templates = time.perf_counter() - t0
    res = {"n": args.n, "chunk_size": args.chunk_size, "templates_s": t_templates,
           "threads_all": R.default_threads(), "numba": numba.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        if args.product:
            path = Path(args.product)
        else:
            families = FamilySet(sedlib, args.families) if args.families else sedlib
            (path,) = simulate_products(args.n, args.seed, "test", args.n, Path(tmp), instrument, families,
                                        progress=False)
        from astropy.io import fits
        z_true = np.asarray(fits.getdata(path, "TRUTH")["Z_TRUE"], float)[:args.n]
        if args.catalog:
            grid, pz, z_net = catalog_pz(args.catalog, args.n)
        else:
            grid = PzGrid(z0=0.000746493316427684, dz=0.001492986632855369, nbin=640, space="ln1pz")  # cpu_ln
            pz, z_net = synthetic_pz(z_true, grid, args.seed)
        n = min(args.n, z_true.size)
        res["n"] = n
        # warm-up: compile or load the cached kernels
        t0 = time.perf_counter()
        from csst_sls_z.products.reader import open_product
        with open_product(path) as reader:
            for sl, bands in reader.iter_chunks(min(32, n)):
                r = R.refine(bands, pz[sl], grid, z_net[sl], model, threads=1)
                R.intervals(r)
                break
        res["warmup_s"] = time.perf_counter() - t0
        one, t1, t_read, cpu1 = refine_product(path, pz, z_net, grid, model, args.chunk_size, threads=1)
        allc, ta, _, _ = refine_product(path, pz, z_net, grid, model, args.chunk_size, threads=None)
        assert np.array_equal(one.z, allc.z, equal_nan=True), "threads changed the result"
        t0 = time.perf_counter()
        R.intervals(allc)
        t_iv = time.perf_counter() - t0
        ran = one.status != R.STATUS_NOT_RUN
        res.update({
            "rate_1_thread": n / t1, "rate_all": n / ta, "cpu_ms_per_spectrum": 1e3 * cpu1 / n,
            "read_s": t_read, "intervals_rate": n / t_iv,
            "evaluations_mean": float(one.evaluations[ran].mean()) if ran.any() else float("nan"),
            "windows": np.bincount(one.posterior.n_windows, minlength=model.max_windows + 1).tolist(),
            "status": np.bincount(one.status, minlength=3).tolist()})
        if args.full:
            n_full = min(args.n_full, n)
            full = model.replace(**FULL_METHOD)
            full.templates
            sub = slice(0, n_full)
            with open_product(path) as reader:
                for sl, bands in reader.iter_chunks(n_full):
                    c0 = time.process_time()
                    t0 = time.perf_counter()
                    rf = R.refine(bands, pz[sub], grid, z_net[sub], full, threads=1)
                    tf = time.perf_counter() - t0
                    cf = time.process_time() - c0
                    break
            res.update({"n_full": n_full, "full_rate_1_thread": n_full / tf, "full_cpu_ms": 1e3 * cf / n_full,
                        "full_evaluations_mean": float(rf.evaluations[rf.status != 1].mean())})
    res["load_1min"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return res


def markdown(res) -> str:
    rows = [("objects (chunk size)", f"{res['n']:,} ({res['chunk_size']})"),
            ("templates broadened (model load)", f"{res['templates_s']:.2f} s"),
            ("warm-up (kernels compiled or loaded from numba's cache)", f"{res['warmup_s']:.1f} s"),
            ("refine, 1 thread",
             f"{res['rate_1_thread']:,.0f} spectra/s ({res['cpu_ms_per_spectrum']:.2f} ms CPU each)"),
            (f"refine, {res['threads_all']} threads", f"{res['rate_all']:,.0f} spectra/s"),
            ("chi2 evaluations per object (units of all its pixels)", f"{res['evaluations_mean']:.1f}"),
            ("objects with 1/2/3/4 windows", "/".join(str(v) for v in res["windows"][1:])),
            ("status 0/1/2", "/".join(str(v) for v in res["status"])),
            ("intervals (posterior summaries at one T)", f"{res['intervals_rate']:,.0f} spectra/s"),
            ("reading the product (not in the rates)", f"{res['read_s']:.2f} s")]
    if "n_full" in res:
        rows += [(f"the note's full method, 1 thread, {res['n_full']:,} objects",
                  f"{res['full_rate_1_thread']:,.0f} spectra/s ({res['full_cpu_ms']:.1f} ms CPU each, "
                  f"{res['full_evaluations_mean']:.0f} evaluations)"),
                 ("speed ratio default / full (1 thread)", f"{res['rate_1_thread'] / res['full_rate_1_thread']:.1f}x")]
    rows.append(("1-min load at the end", f"{res['load_1min']:.1f}"))
    lines = ["| quantity | value |", "|---|---|"] + [f"| {q} | {v} |" for q, v in rows]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="objects (default 2000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, default=1024, help="objects per chunk, as the stage's (1024)")
    parser.add_argument("--families", default=None, help="SED families, as simulate's --families")
    parser.add_argument("--product", default=None, help="an existing product (with TRUTH) instead of simulating")
    parser.add_argument("--catalog", default=None, help="the stage's output for --product: its Z and PZ are used")
    parser.add_argument("--refinement", default=None, help="a refinement reference file (default: built)")
    parser.add_argument("--reference-dir", default=None, help="reference set for the sedlib and instrument")
    parser.add_argument("--full", action="store_true", help="also time the note's full method")
    parser.add_argument("--n-full", type=int, default=200, help="objects for --full (default 200)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: shows that it works, not how fast")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    return parser


def measure_refine(ws, n: int, n_full: int, chunk_size: int) -> dict:
    """The suite's benchmark: the refinement (synthetic p(z)) on the workspace's product of ``n``
    objects, one thread and all, and the note's full method on ``n_full`` of them."""
    args = parser().parse_args(["--n", str(n), "--n-full", str(n_full), "--chunk-size", str(chunk_size), "--full",
                                "--product", str(ws.product(n))])
    return run(args)


def main(argv=None) -> int:
    parser_ = parser()
    args = parser_.parse_args(argv)
    if args.quick:
        args.n, args.n_full, args.chunk_size = 64, 16, 32
        args.full = True
    if args.n <= 0 or args.chunk_size <= 0:
        parser_.error("--n and --chunk-size must be positive")
    if args.catalog and not args.product:
        parser_.error("--catalog needs --product (the input the catalogue was made from)")
    res = run(args)
    print(markdown(res))
    if args.quick:
        print("\n(quick mode: these numbers say the code works, not how fast it is)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
