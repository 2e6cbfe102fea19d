"""Speed and memory of the CSST slitless simulator.

Measures, on the shipped foundation reference set:

* objects per second (each a GV and a GI spectrum) into memory (``simulate_arrays``: both bands, noise included), after a
  warm-up that loads numba's compiled kernels;
* objects per second into Layout A FITS products (``simulate_products``, one file);
* objects per second into memory for each SED family alone and for the training mixture
  with the instrument variations on (the SPS library is built first and not timed: a
  regeneration builds it once);
* peak resident memory (``VmHWM`` from /proc/self/status) of a fresh Python process
  that writes an ``--n-memory``-object product in one file (``--per-file`` = ``--n-memory``),
  beside the peak of the same process that only imports the package and loads the models.

and prints a markdown table. The full run (docs/simulation.md quotes it):

    python benchmarks/bench_simulation.py --n 10000 --n-memory 100000

A quick check that it works: ``python benchmarks/bench_simulation.py --n 200 --n-memory 200``.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MEMORY_SNIPPET = r"""
import sys, time
sys.path.insert(0, {root!r})
from benchmarks.rss_sampler import PeakRss, status_kib
rss = PeakRss()      # the writer's checksum pass maps the finished product: report it apart
mode, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
from csst_sls_z.simulation import load_models
instrument, sedlib, refset = load_models()
t0 = time.perf_counter()
if mode == "product":
    from csst_sls_z.cli import main
    rc = main(["simulate", "--n", str(n), "--seed", "1", "--population", "test", "--per-file", str(n),
               "--out", out, "--no-progress", "--log-level", "WARNING"])
    assert rc == 0, rc
elapsed = time.perf_counter() - t0
time.sleep(0.05)
# VmHWM, not ru_maxrss: on Linux ru_maxrss carries the parent's peak across execve.
print(elapsed, status_kib("VmHWM"), rss.peak["RssAnon"], rss.peak["RssFile"])
"""


def peak_memory(mode: str, n: int, out: str):
    """(seconds, peak RSS in MiB) of a fresh interpreter doing ``mode`` ('baseline' or 'product')."""
    code = MEMORY_SNIPPET.format(root=str(ROOT))
    res = subprocess.run([sys.executable, "-c", code, mode, str(n), out], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"memory run ({mode}) failed: {res.stderr.strip().splitlines()[-1:]}")
    seconds, hwm_kib, anon_kib, file_kib = res.stdout.split()[-4:]
    # /proc reports kB
    return float(seconds), float(hwm_kib) / 1024.0, float(anon_kib) / 1024.0, float(file_kib) / 1024.0


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(n: int, n_memory: int, seed: int = 1, population: str = "test", sps_n: int = 5000) -> list:
    """The rows of the table (quantity, value), measured in this process and two fresh ones."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import numba

    from csst_sls_z.simulation import load_models, simulate_arrays, simulate_products
    instrument, sedlib, _ = load_models()
    simulate_arrays(200, seed + 1, population, instrument, sedlib)            # warm-up (numba cache)

    t0 = time.perf_counter()
    sim = simulate_arrays(n, seed, population, instrument, sedlib)
    t_mem = time.perf_counter() - t0
    assert len(sim) == n

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        (path,) = simulate_products(n, seed, population, n, Path(tmp), instrument, sedlib, progress=False)
        t_fits = time.perf_counter() - t0
        size_mib = path.stat().st_size / 2 ** 20

    family_rows = per_family_rates(n, seed, population, instrument, sedlib, sps_n)

    with tempfile.TemporaryDirectory() as tmp:
        _, base_rss, base_anon, base_file = peak_memory("baseline", n_memory, tmp)
        t_big, big_rss, big_anon, big_file = peak_memory("product", n_memory, tmp)
        big_mib = sum(p.stat().st_size for p in Path(tmp).glob("*.fits")) / 2 ** 20

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = [
        ("machine", f"{cpu_name()}, {os.cpu_count()} cores, "
                    f"numba threads {numba.get_num_threads()}, 1-min load {load:.1f} at the end"),
        (f"simulate_arrays, {n:,} objects (memory)", f"{n / t_mem:,.0f} objects/s ({t_mem:.2f} s)"),
        (f"simulate_products, {n:,} objects (one FITS file, {size_mib:.1f} MiB)",
         f"{n / t_fits:,.0f} objects/s ({t_fits:.2f} s)"),
        ("peak RSS (VmHWM), fresh process: import + load_models only",
         f"{base_rss:,.0f} MiB (anonymous {base_anon:,.0f}, file-backed {base_file:,.0f})"),
        (f"peak RSS (VmHWM), fresh process: CLI simulate {n_memory:,} objects, --per-file {n_memory:,} "
         f"({big_mib:.1f} MiB written)",
         f"{big_rss:,.0f} MiB (anonymous {big_anon:,.0f}, file-backed {big_file:,.0f}; {t_big:.1f} s)"),
    ]
    return rows[:3] + family_rows + rows[3:]


def per_family_rates(n, seed, population, instrument, sedlib, sps_n: int = 5000) -> list:
    """simulate_arrays rate for each family alone (nominal) and for the training mixture with variations."""
    from csst_sls_z.simulation import FamilySet, TRAINING_VARIATIONS, simulate_arrays
    from csst_sls_z.simulation.families import FAMILIES
    from csst_sls_z.simulation.sps_library import SPSUnavailable, build_sps_library
    try:
        t0 = time.perf_counter()
        library = build_sps_library(sps_n, seed)
        rows = [(f"SPS library, {sps_n:,} rest-frame SEDs (built once per regeneration, not in the rates)",
                 f"{time.perf_counter() - t0:.1f} s")]
    except SPSUnavailable:
        library, rows = None, [("SPS library", "not measured: the sps extra is not installed")]
    from csst_sls_z.simulation.families import FamilyUnavailable
    sets = []
    for name in FAMILIES:
        if name == "SPS" and library is None:
            continue
        try:
            sets.append((name, FamilySet(sedlib, name, sps_library=library), None))
        except FamilyUnavailable:
            rows.append((name, "not measured: its data is not installed"))
    if library is not None:
        sets.append(("SPS:0.5,KCORRECT:0.3,REDROCK2016:0.2, training variations",
                     FamilySet(sedlib, "SPS:0.5,KCORRECT:0.3,REDROCK2016:0.2", sps_library=library),
                     TRAINING_VARIATIONS))
    for label, families, options in sets:
        kw = {} if options is None else {"options": options}
        simulate_arrays(200, seed + 1, population, instrument, families, **kw)          # warm-up
        t0 = time.perf_counter()
        simulate_arrays(n, seed, population, instrument, families, **kw)
        dt = time.perf_counter() - t0
        rows.append((f"simulate_arrays, {n:,} objects, {label}", f"{n / dt:,.0f} objects/s ({dt:.2f} s)"))
    return rows


def measure_simulation(ws, n: int, n_memory: int, sps_n: int) -> dict:
    """The suite's benchmark: :func:`run` (the simulator needs nothing from the workspace)."""
    return {"rows": run(n, n_memory, sps_n=sps_n)}


def markdown(rows) -> str:
    lines = ["| quantity | value |", "|---|---|"]
    lines += [f"| {q} | {v} |" for q, v in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10000, help="objects for the speed runs (default 10000)")
    parser.add_argument("--n-memory", type=int, default=100000,
                        help="objects in the one-file product whose peak memory is measured (default 100000)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.n <= 0 or args.n_memory <= 0:
        parser.error("--n and --n-memory must be positive")
    print(markdown(run(args.n, args.n_memory, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
