"""Time to the error of ``csst-sls-z run`` on wrong invocations (the target: under 1 s, before TensorFlow).

Each case runs ``csst_sls_z.cli.main(["run", ...])`` in a fresh interpreter (what the
``csst-sls-z`` script does), ``--repeat`` times, and reports the wall time from start to
exit (interpreter start-up and imports included), the exit code, the number of stderr
lines and whether TensorFlow was imported. Cases: the input is missing, a directory, not
FITS, empty; the output directory is missing; the output exists without ``--overwrite``.
Two reference rows: the bare interpreter and ``run --help``. Prints a markdown table.

    python benchmarks/bench_fail_fast.py --repeat 5

To measure another version of the code (e.g. before the checks existed), put its checkout
first on the path: ``PYTHONPATH=/path/to/old/checkout python benchmarks/bench_fail_fast.py``.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 1.0
SNIPPET = ("import sys\nfrom csst_sls_z.cli import main\nrc = main({argv!r})\n"
           "print('TENSORFLOW', 'tensorflow' in sys.modules)\nsys.exit(rc)")


def tiny_product(path: Path) -> Path:
    """A valid Layout A product of 3 objects (SPEC_GV, SPEC_GI), written with astropy."""
    import numpy as np
    from astropy.io import fits
    hdus = [fits.PrimaryHDU()]
    for band, w0 in (("GV", 4000.0), ("GI", 6500.0)):
        wave = np.tile(w0 + 10.0 * np.arange(50), (3, 1))
        cols = [fits.Column(name="OBJID", format="K", array=np.arange(1, 4)),
                fits.Column(name="WAVELENGTH", format="50D", array=wave, unit="Angstrom"),
                fits.Column(name="FLUX", format="50E", array=np.ones((3, 50)), unit="1e-17 erg/s/cm2/Angstrom"),
                fits.Column(name="ERR", format="50E", array=np.full((3, 50), 0.1), unit="1e-17 erg/s/cm2/Angstrom")]
        hdus.append(fits.BinTableHDU.from_columns(cols, name=f"SPEC_{band}"))
    fits.HDUList(hdus).writeto(path, checksum=True)
    return path


def cases(tmp: Path) -> dict:
    product = tiny_product(tmp / "product.fits")
    (tmp / "a_directory").mkdir()
    (tmp / "notes.fits").write_text("not a FITS file\n")
    (tmp / "empty.fits").write_bytes(b"")
    (tmp / "existing_out.fits").write_bytes(b"an earlier output")
    out = str(tmp / "out.fits")
    return {
        "input missing": ["run", str(tmp / "missing.fits"), "-o", out],
        "input is a directory": ["run", str(tmp / "a_directory"), "-o", out],
        "input not FITS": ["run", str(tmp / "notes.fits"), "-o", out],
        "input empty (0 bytes)": ["run", str(tmp / "empty.fits"), "-o", out],
        "output directory missing": ["run", str(product), "-o", str(tmp / "no_such_dir" / "out.fits")],
        "output exists, no --overwrite": ["run", str(product), "-o", str(tmp / "existing_out.fits")],
    }


def time_once(code: list[str], env, cwd) -> dict:
    """Wall time and the child's own CPU time (user + system, from wait4): on a shared machine the
    CPU time is what the command costs, the wall time what its user waits."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(code, stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    tf = [line for line in stdout.splitlines() if line.startswith("TENSORFLOW ")]
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rc": proc.returncode,
            "stderr_lines": len(stderr.splitlines()), "tf": tf[-1].split()[1] == "True" if tf else None,
            "stderr": stderr}


def measure(repeats: int) -> dict:
    """Every case of the module doc, ``repeats`` runs each, in fresh interpreters started in a
    temporary directory (not this checkout, so the installed or PYTHONPATH package is timed)."""
    env = dict(os.environ)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = {"(reference) python -c pass": [sys.executable, "-c", "pass"],
                "(reference) run --help": [sys.executable, "-c", SNIPPET.format(argv=["run", "--help"])]}
        runs.update({name: [sys.executable, "-c", SNIPPET.format(argv=a)] for name, a in cases(tmp).items()})
        for name, code in runs.items():
            results = [time_once(code, env, tmp) for _ in range(repeats)]
            last = results[-1]
            walls = [r["wall"] for r in results]
            rows.append({"case": name, "exit": last["rc"], "stderr_lines": last["stderr_lines"],
                         "tensorflow_imported": last["tf"], "wall_median_s": statistics.median(walls),
                         "wall_max_s": max(walls), "cpu_median_s": statistics.median(r["cpu"] for r in results),
                         "last_stderr_line": (last["stderr"].strip().splitlines()[-1]
                                              if last["stderr"].strip() else "")})
    where = subprocess.run([sys.executable, "-c", "import csst_sls_z; print(csst_sls_z.__file__)"], env=env,
                           capture_output=True, text=True, cwd=tempfile.gettempdir()).stdout.strip()
    errors = [r for r in rows if not r["case"].startswith("(reference)")]
    return {"repeats": repeats, "rows": rows, "package": where, "target_s": TARGET_S,
            "slowest_error_s": max(r["wall_median_s"] for r in errors),
            "load_1min_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")}


def measure_fail_fast(ws, repeats: int) -> dict:
    """The suite's benchmark (it needs nothing from the workspace)."""
    return measure(repeats)


def markdown(res: dict) -> str:
    lines = [f"python {platform.python_version()}, {os.cpu_count()} CPU(s), load average "
             f"{res['load_1min_end']:.1f} at the end, {res['repeats']} runs per case, csst_sls_z from "
             f"{res['package']}", "",
             "| case | exit | stderr lines | TensorFlow imported | wall s, median | wall s, max | CPU s, median "
             "| last stderr line |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        tf = r["tensorflow_imported"]
        tf_text = "-" if tf is None else ("yes" if tf else "no")
        lines.append(f"| {r['case']} | {r['exit']} | {r['stderr_lines']} | {tf_text} | {r['wall_median_s']:.2f} | "
                     f"{r['wall_max_s']:.2f} | {r['cpu_median_s']:.2f} | `{r['last_stderr_line'][:100]}` |")
    worst = res["slowest_error_s"]
    lines += ["", f"slowest error, median wall time: {worst:.2f} s (target under {res['target_s']:.0f} s): "
                  f"{'met' if worst < res['target_s'] else 'NOT met'}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per case (default: 5)")
    args = ap.parse_args(argv)
    res = measure(args.repeat)
    print(markdown(res))
    return 0 if res["slowest_error_s"] < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
