"""Start-up of the stage: from launching a process to its first processed chunk.

    python benchmarks/bench_startup.py                  # about a minute on 2 idle cores
    python benchmarks/bench_startup.py --repeats 5 --json /tmp/startup.json

Each repeat launches fresh Python processes, in turn:

* ``python -c pass``: the interpreter alone;
* ``import tensorflow`` (through ``csst_sls_z.tfenv``): the floor any TensorFlow stage pays;
* the phases of one stage run, timed inside one process on the shipped defaults: importing
  the stage (no TensorFlow), importing TensorFlow, reading the reference set and building the
  network (``RedshiftStage.sampler``), then ``process_file`` on a small product (one chunk,
  catalogue only; the first chunk pays the traces, the XLA compile of the head and loading
  numba's cached kernels) and the same file again (steady), so the first chunk's one-off cost
  is the difference;
* the command itself, ``csst-sls-z run IN -o OUT --catalog-only --overwrite`` (``python -m
  csst_sls_z.cli``), timed from launch to exit.

Times are medians over the repeats, measured from the parent's launch of each process
(``time.time()`` in both), so interpreter start-up is included.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PHASES_CHILD = r"""
import json, sys, time
marks = {}
from csst_sls_z.stage import RedshiftStage
marks["stage imported"] = time.time()
from csst_sls_z.tfenv import import_tensorflow
import_tensorflow()
marks["tensorflow imported"] = time.time()
stage = RedshiftStage(catalog_only=True, overwrite=True)
stage.load_references(); stage.sampler()
marks["references read, network built"] = time.time()
stage.process_file(sys.argv[1], sys.argv[2])
marks["first file (one chunk) written"] = time.time()
stage.process_file(sys.argv[1], sys.argv[2])
marks["same file again (steady)"] = time.time()
print("MARKS " + json.dumps(marks))
"""


def _env():
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _timed(cmd) -> tuple[float, str, float]:
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed: {proc.stderr.strip()[-500:]}")
    return time.time() - t0, proc.stdout, t0


def run(repeats: int, product: Path, work: Path) -> dict:
    """Every series of the module doc, ``repeats`` times, on ``product`` (outputs in ``work``)."""
    from csst_sls_z.products import open_product
    with open_product(product) as reader:
        n = reader.n_objects
    out = work / "out.fits"
    py = sys.executable
    series = {"python -c pass": [], "import tensorflow": [], "csst-sls-z run (whole process)": []}
    phases = []
    for _ in range(repeats):
        series["python -c pass"].append(_timed([py, "-c", "pass"])[0])
        series["import tensorflow"].append(
            _timed([py, "-c", "from csst_sls_z.tfenv import import_tensorflow; import_tensorflow()"])[0])
        _, stdout, t0 = _timed([py, "-c", PHASES_CHILD, str(product), str(out)])
        marks = json.loads(next(line[6:] for line in stdout.splitlines() if line.startswith("MARKS ")))
        phases.append({k: v - t0 for k, v in marks.items()})
        series["csst-sls-z run (whole process)"].append(_timed(
            [py, "-m", "csst_sls_z.cli", "run", str(product), "-o", str(out), "--catalog-only", "--overwrite",
             "--no-progress", "--log-level", "WARNING"])[0])
    med = {k: statistics.median(v) for k, v in series.items()}
    keys = list(phases[0])
    at = {k: statistics.median(p[k] for p in phases) for k in keys}
    steps, prev = {}, 0.0
    for k in keys:
        steps[k] = at[k] - prev
        prev = at[k]
    return {"objects": n, "repeats": repeats, "processes": med, "phase_ends_s": at, "phase_s": steps,
            "first_chunk_one_off_s": steps[keys[3]] - steps[keys[4]],
            "to_first_chunk_s": at[keys[3]], "load": os.getloadavg()[0]}


def markdown(r: dict) -> str:
    L = [f"Start-up, median of {r['repeats']} fresh processes each; a {r['objects']}-object product (one chunk).", "",
         "| process | wall (s) |", "|---|---|"]
    L += [f"| {k} | {v:.2f} |" for k, v in r["processes"].items()]
    L += ["", "| phase of one stage process | ends at (s from launch) | takes (s) |", "|---|---|---|"]
    L += [f"| {k} | {r['phase_ends_s'][k]:.2f} | {r['phase_s'][k]:.2f} |" for k in r["phase_s"]]
    L += ["", f"Launch to the first processed chunk written: **{r['to_first_chunk_s']:.2f} s**; the first chunk's "
          f"one-off cost (traces, XLA compile, numba's cached kernels) {r['first_chunk_one_off_s']:.2f} s. "
          f"1-minute load average at the end: {r['load']:.2f}."]
    return "\n".join(L)


def measure_startup(ws, repeats: int, copies: int) -> dict:
    """The suite's benchmark: :func:`run` on the fixed product of ``copies`` x 24 objects."""
    return run(repeats, ws.fixed_product(copies, seed=2), ws.path("startup"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--copies", type=int, default=11, help="copies of the golden product's 24 rows (one chunk)")
    p.add_argument("--json", default=None, help="write every number here")
    args = p.parse_args(argv)
    from benchmarks.workspace import Workspace
    with Workspace() as ws:
        r = measure_startup(ws, args.repeats, args.copies)
    print(markdown(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
