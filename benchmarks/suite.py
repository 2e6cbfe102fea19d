"""The registry of the performance benchmarks and the runner behind ``python -m benchmarks``.

    python -m benchmarks                         # every benchmark, full size: writes docs/performance_results.md
    python -m benchmarks e2e bnn --quick         # two of them at the tiny size: the page on stdout
    python -m benchmarks --quick --out /tmp/perf_quick.md
    python -m benchmarks e2e --param e2e.n_large=20000 --out /tmp/e2e.md
    python -m benchmarks --list

Each benchmark is a function ``f(ws, **size) -> dict`` (``ws``: the shared
:class:`~benchmarks.workspace.Workspace`) registered here with two sizes: ``full``, the sizes
the docs quote, and ``tiny``, seconds each, for ``--quick`` and the tests (its numbers say the
code works, not how fast it is). They run in registry order, in this process; a benchmark that
measures a fresh process (the stage end to end, start-up, memory) starts one. The page
(:mod:`benchmarks.report`) has a section per benchmark, then where the time goes and the
targets, for those whose benchmarks ran; a JSON file of every number is written beside it.
"""
from __future__ import annotations

import argparse
import ast
import datetime as _dt
import importlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

log = logging.getLogger(__name__)

RESULTS_PAGE = ROOT / "docs" / "performance_results.md"


@dataclass(frozen=True)
class Benchmark:
    """One registered benchmark: ``module.function(ws, **sizes[size])``."""
    name: str
    module: str                  # in the benchmarks package
    function: str
    summary: str
    sizes: dict = field(default_factory=dict)      # "full" and "tiny": keyword arguments of the function

    def run(self, ws, size: str = "full", **overrides) -> dict:
        fn = getattr(importlib.import_module(f"benchmarks.{self.module}"), self.function)
        return fn(ws, **{**self.sizes[size], **overrides})


REGISTRY = {b.name: b for b in (
    Benchmark("matmul", "bench_core", "measure_matmul", "dense float32 matmul, the yardstick (TensorFlow, numpy)",
              {"full": dict(n=4096, repeats=5), "tiny": dict(n=256, repeats=1)}),
    Benchmark("preprocess", "bench_core", "measure_preprocess", "numba resample + normalise vs plain numpy",
              {"full": dict(n=4096, repeats=3), "tiny": dict(n=100, repeats=1)}),
    Benchmark("backbone", "bench_core", "measure_backbone", "backbone inference, cpu and paper networks, FLOPs",
              {"full": dict(n=2048, repeats=3, profile_paper=True), "tiny": dict(n=32, repeats=1, profile_paper=False)}),
    Benchmark("bnn", "bench_core", "measure_bnn", "S = 200 BNN: backbone once vs S full passes",
              {"full": dict(n=2048, n_naive=64, repeats=2, eager=True),
               "tiny": dict(n=32, n_naive=4, repeats=1, eager=False)}),
    Benchmark("e2e", "bench_core", "measure_end_to_end", "the stage FITS in to FITS out, peak RSS, bfloat16",
              {"full": dict(n=10000, n_large=100000, n_warm=600), "tiny": dict(n=100, n_large=300, n_warm=20)}),
    Benchmark("refine_e2e", "bench_refine_e2e", "measure_refine_e2e",
              "the stage with and without its template refinement (shipped set)",
              {"full": dict(n=10000, repeats=2), "tiny": dict(n=40, repeats=1)}),
    Benchmark("memory", "bench_memory", "measure_memory", "peak anonymous and file-backed memory as the input grows",
              {"full": dict(sizes=[10000, 100000], warm=600, samples=200),
               "tiny": dict(sizes=[30, 60], warm=20, samples=4)}),
    Benchmark("startup", "bench_startup", "measure_startup", "launch to the first processed chunk",
              {"full": dict(repeats=3, copies=11), "tiny": dict(repeats=1, copies=2)}),
    Benchmark("fail_fast", "bench_fail_fast", "measure_fail_fast", "time to the error of a wrong run command",
              {"full": dict(repeats=5), "tiny": dict(repeats=1)}),
    Benchmark("head", "bench_head", "measure_head", "the BNN head's sampling paths, and the stage's ways",
              {"full": dict(objects=1024, repeats=3, copies=100, stage_repeats=2, chunk_size=4096),
               "tiny": dict(objects=256, repeats=1, copies=2, stage_repeats=1, chunk_size=4096, samples=20)}),
    Benchmark("refine", "bench_refine", "measure_refine", "the template refinement alone (synthetic p(z))",
              {"full": dict(n=2000, n_full=200, chunk_size=1024), "tiny": dict(n=64, n_full=16, chunk_size=32)}),
    Benchmark("simulation", "bench_simulation", "measure_simulation", "the simulator: objects/s and peak memory",
              {"full": dict(n=10000, n_memory=100000, sps_n=5000), "tiny": dict(n=40, n_memory=30, sps_n=50)}),
    Benchmark("redrock", "bench_redrock", "measure_against_redrock", "the stage against Redrock, speed and accuracy",
              {"full": dict(n=1000, n_stage=10000, n_warm=600, procs=0),
               "tiny": dict(n=6, n_stage=100, n_warm=20, procs=1)}),
    Benchmark("batch", "bench_batch", "measure_batch", "csst-sls-z batch (Dask) against the single process",
              {"full": dict(objects_per_file=20000, files=2, workers="1,2", samples=200, network="cpu"),
               "tiny": dict(objects_per_file=20, files=2, workers="1", samples=4, network="smoke")}),
)}


def parse_params(items) -> dict:
    """``["e2e.n_large=20000", ...]`` -> ``{"e2e": {"n_large": 20000}}``: values as Python literals
    (``memory.sizes=[10000,50000]``), as text where the registered size is text (``batch.workers=1,2``)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        name, dot, param = key.partition(".")
        if not (sep and dot and name in REGISTRY):
            raise ValueError(f"--param {item!r}: expected NAME.KEY=VALUE with NAME one of {', '.join(REGISTRY)}")
        if param not in REGISTRY[name].sizes["full"] and param != "samples":
            raise ValueError(f"--param {item!r}: {name} takes {', '.join(REGISTRY[name].sizes['full'])}")
        if isinstance(REGISTRY[name].sizes["full"].get(param), str):
            out.setdefault(name, {})[param] = value
            continue
        try:
            out.setdefault(name, {})[param] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ValueError(f"--param {item!r}: {value!r} is not a Python literal") from None
    return out


def run_suite(names, ws, size: str = "full", params: dict | None = None, command: str = "") -> dict:
    """Run ``names`` in registry order on ``ws``; a benchmark that raises is recorded in ``failed``
    and the others still run."""
    from benchmarks.bench_core import machine_info
    params = params or {}
    run = {"quick": size == "tiny", "size": size, "command": command,
           "started": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
           "machine": machine_info(), "results": {}, "sizes": {}, "wall_s_each": {}, "failed": {}}
    t_all = time.perf_counter()
    for name in [n for n in REGISTRY if n in names]:
        bench = REGISTRY[name]
        run["sizes"][name] = {**bench.sizes[size], **params.get(name, {})}
        log.info("%s: %s", name, bench.summary)
        t0 = time.perf_counter()
        try:
            run["results"][name] = bench.run(ws, size, **params.get(name, {}))
        except Exception as exc:                  # the others still run; the exit code says it
            log.exception("%s failed", name)
            run["failed"][name] = f"{type(exc).__name__}: {exc}"
        run["wall_s_each"][name] = time.perf_counter() - t0
    run["wall_s"] = time.perf_counter() - t_all
    run["load_1min_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return run


def _json_value(value):
    """numpy scalars as numbers, anything else JSON cannot hold (paths) as text."""
    return value.item() if hasattr(value, "item") else str(value)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", allow_abbrev=False,
                                description="The csst_sls_z performance benchmarks: run some or all, write one "
                                            "markdown page of results (and a JSON file of every number beside it).",
                                epilog="benchmarks: " + ", ".join(REGISTRY) + " (--list says what each measures)")
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: seconds each; the numbers mean nothing")
    p.add_argument("--out", type=Path, default=None,
                   help=f"markdown results file, a .json beside it (default: {RESULTS_PAGE.relative_to(ROOT)} when "
                        "every benchmark runs at full size, else the page goes to stdout)")
    p.add_argument("--workdir", type=Path, default=None, help="keep products and outputs here (default: temporary)")
    p.add_argument("--reference-dir", default=None,
                   help="reference set of the accuracy comparisons (default: the shipped set, if it holds a network)")
    p.add_argument("--param", action="append", default=[], metavar="NAME.KEY=VALUE",
                   help="override one size of one benchmark, e.g. e2e.n_large=20000, redrock.procs=2 (repeatable)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and their sizes, and exit")
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = parser()
    args = p.parse_args(argv)
    if args.list:
        for b in REGISTRY.values():
            print(f"{b.name:11s} {b.summary}\n{'':11s} full {b.sizes['full']}\n{'':11s} tiny {b.sizes['tiny']}")
        return 0
    unknown = [n for n in args.names if n not in REGISTRY]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(REGISTRY)}")
    try:
        params = parse_params(args.param)
    except ValueError as exc:
        p.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="[benchmarks %(asctime)s] %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("csst_sls_z").setLevel(logging.WARNING)     # the measured stage's own progress lines
    names = args.names or list(REGISTRY)
    out = args.out
    if out is None and not args.names and not args.quick:
        out = RESULTS_PAGE
    from benchmarks.report import markdown
    from benchmarks.workspace import Workspace
    with Workspace(args.workdir, args.reference_dir) as ws:
        run = run_suite(names, ws, "tiny" if args.quick else "full", params,
                        command="python -m benchmarks " + " ".join(argv))
    page = markdown(run)
    if out is None:
        print(page)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page)
        out.with_suffix(".json").write_text(json.dumps(run, indent=1, default=_json_value))
        log.info("wrote %s and %s (%.0f s)", out, out.with_suffix(".json"), run["wall_s"])
    for name, error in run["failed"].items():
        log.error("%s failed: %s", name, error)
    return 1 if run["failed"] else 0
