"""Throughput and memory of ``csst-sls-z batch`` (Dask) against the single-process stage.

Simulates ``--files`` products of ``--objects-per-file`` objects, then measures, end to
end (process / cluster start-up, TensorFlow import and network build included):

* the stage in one process (``csst_sls_z.cli.main(["run", FILES, "-o", DIR, ...])`` in a
  fresh interpreter): wall time, spectra per second and the peak resident memory of that
  process (its own ``VmHWM``);
* ``run_batch`` on a fresh LocalCluster of 1 and of 2 workers (``--workers``): wall time,
  spectra per second, the speed-up over the stage, and the peak resident memory of each
  worker process (``VmHWM`` read inside every worker, after the batch).

Peak memory is ``VmHWM`` from /proc/self/status, not ``ru_maxrss``: on Linux a child's
``ru_maxrss`` carries its parent's peak across ``execve`` (this benchmark's own process
holds the simulated products), while ``VmHWM`` belongs to the process's own address space;
* whether every batch catalogue has the same Z column, bit for bit, as the stage's.

and prints a markdown table. The network is a DUMMY set of the architecture named by
``--network`` (untrained weights cost what trained ones cost), unless ``--reference-dir``
names a trained set. The full run (docs/pipeline.md):

    python benchmarks/bench_batch.py --objects-per-file 100000 --files 2 --samples 200 --network cpu

A quick check that it works (seconds of CPU; what the test machine ran):

    python benchmarks/bench_batch.py --objects-per-file 20 --files 2 --samples 4 --network smoke
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

log = logging.getLogger(__name__)


def _vmhwm_mib() -> float:
    """This process's peak resident memory (VmHWM), MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0        # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


STAGE_SNIPPET = """
import sys
from csst_sls_z.cli import main
rc = main(sys.argv[1:])
with open("/proc/self/status") as status:
    hwm = [int(line.split()[1]) for line in status if line.startswith("VmHWM:")][0]
print(f"VMHWM_KIB {hwm}", file=sys.stderr)
sys.exit(rc)
"""


def run_stage(files, out: Path, args, refdir: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-c", STAGE_SNIPPET, "run", *map(str, files), "-o", str(out), "--samples",
           str(args.samples), "--chunk-size", str(args.chunk_size), "--reference-dir", str(refdir),
           "--backbone-precision", args.backbone_precision,
           "--overwrite", "--log-level", "WARNING"]       # a rerun in the same --workdir replaces its outputs
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"the stage failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    hwm = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("VMHWM_KIB")][0]
    return {"wall": wall, "rss": [hwm / 1024.0]}


def run_dask(files, out: Path, workers: int, args, refdir: Path) -> dict:
    from distributed import Client

    from csst_sls_z.batch import local_cluster, quiet_dask, run_batch
    quiet_dask()
    t0 = time.perf_counter()
    with local_cluster(workers) as cluster, Client(cluster) as client:
        result = run_batch(files, out, client=client, samples=args.samples, seed=0, reference_dir=refdir,
                           backbone_precision=args.backbone_precision,
                           chunk_size=args.chunk_size, progress=False)
        wall = time.perf_counter() - t0
        rss = sorted(client.run(_vmhwm_mib).values())
    if result.exit_code != 0:
        raise SystemExit(f"the batch failed: {result.error or result.failures}")
    return {"wall": wall, "rss": rss}


def same_z(a_dir: Path, b_dir: Path, files) -> bool:
    import numpy as np
    from astropy.io import fits
    for f in files:
        name = f"{Path(f).name.split('.')[0]}_slsz.fits"
        za = fits.getdata(a_dir / name, "SLS_REDSHIFT")["Z"]
        zb = fits.getdata(b_dir / name, "SLS_REDSHIFT")["Z"]
        if np.asarray(za).tobytes() != np.asarray(zb).tobytes():
            return False
    return True


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--objects-per-file", type=int, default=100000, help="objects in each product")
    p.add_argument("--files", type=int, default=2, help="products (>= workers, so every worker has work)")
    p.add_argument("--workers", default="1,2", help="comma-separated LocalCluster sizes to measure")
    p.add_argument("--samples", type=int, default=200, help="BNN samples per spectrum")
    p.add_argument("--chunk-size", type=int, default=4096, help="objects per chunk")
    p.add_argument("--network", default="cpu", choices=("smoke", "cpu", "paper"),
                   help="architecture of the DUMMY set built when no --reference-dir is given")
    from csst_sls_z.datamodel import BACKBONE_PRECISIONS
    p.add_argument("--backbone-precision", default="float32", choices=BACKBONE_PRECISIONS,
                   help="the stage's backbone_precision (docs/stage.md)")
    p.add_argument("--reference-dir", type=Path, default=None, help="a trained reference set to use instead")
    p.add_argument("--workdir", type=Path, default=None, help="keep products and outputs here (default: temp)")
    return p


def measure(args, ws) -> dict:
    """The stage in one process, then ``run_batch`` on each cluster size, on the same products
    (simulated into the workspace once)."""
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    work = ws.path(f"batch_{args.files}x{args.objects_per_file}")
    refdir = args.reference_dir or ws.dummy_set(args.network)
    indir = work / "in"
    files = sorted(indir.glob("*.fits")) if indir.is_dir() else []
    n_total = args.files * args.objects_per_file
    if len(files) != args.files:
        from csst_sls_z.simulation import simulate_products
        indir.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        files = simulate_products(n_total, 7, "test", args.objects_per_file, indir, *ws.models(),
                                  overwrite=True, progress=False)
        log.info("simulated %d objects in %d file(s) in %.1f s", n_total, len(files), time.perf_counter() - t0)
    runs = [{"name": "stage (1 process)", "processes": 1, **run_stage(files, work / "out_stage", args, refdir)}]
    for w in workers:
        out = work / f"out_batch_w{w}"
        if out.exists():
            import shutil
            shutil.rmtree(out)
        runs.append({"name": f"batch, {w} worker(s)", "processes": w, **run_dask(files, out, w, args, refdir)})
        runs[-1]["same"] = same_z(work / "out_stage", out, files)
    for r in runs:
        r["spectra_per_s"] = n_total / r["wall"]
        r["speedup"] = runs[0]["wall"] / r["wall"]
    return {"files": args.files, "objects_per_file": args.objects_per_file, "n_total": n_total,
            "samples": args.samples, "chunk_size": args.chunk_size, "backbone_precision": args.backbone_precision,
            "network": args.network if args.reference_dir is None else str(args.reference_dir), "runs": runs}


def measure_batch(ws, objects_per_file: int, files: int, workers: str, samples: int, network: str) -> dict:
    """The suite's benchmark: :func:`measure` with those options (DUMMY set of ``network``)."""
    args = parser().parse_args(["--objects-per-file", str(objects_per_file), "--files", str(files),
                                "--workers", workers, "--samples", str(samples), "--network", network])
    return measure(args, ws)


def markdown(res: dict) -> str:
    lines = [f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}; "
             f"{res['files']} file(s) x {res['objects_per_file']} objects, samples {res['samples']}, "
             f"chunk {res['chunk_size']}, network {res['network']}, backbone {res['backbone_precision']}", "",
             "| run | processes | wall (s) | spectra/s | speed-up | peak RSS per process (MiB) | Z as the stage |",
             "|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        rss = ", ".join(f"{m:.0f}" for m in r["rss"])
        same = "-" if "same" not in r else ("identical" if r["same"] else "DIFFERENT")
        lines.append(f"| {r['name']} | {r['processes']} | {r['wall']:.1f} | {r['spectra_per_s']:.0f} | "
                     f"{r['speedup']:.2f} | {rss} | {same} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from benchmarks.workspace import Workspace
    with Workspace(args.workdir) as ws:
        res = measure(args, ws)
    print()
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
