"""Time to the error of ``csst-sls-z run`` on wrong invocations (issue 13: under 1 s, before TensorFlow).

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per case (default: 5)")
    args = ap.parse_args(argv)
    env = dict(os.environ)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = {"(reference) python -c pass": [sys.executable, "-c", "pass"],
                "(reference) run --help": [sys.executable, "-c", SNIPPET.format(argv=["run", "--help"])]}
        runs.update({name: [sys.executable, "-c", SNIPPET.format(argv=a)] for name, a in cases(tmp).items()})
        for name, code in runs.items():
            results = [time_once(code, env, tmp) for _ in range(args.repeat)]    # cwd: not this checkout
            last = results[-1]
            walls = [r["wall"] for r in results]
            cpus = [r["cpu"] for r in results]
            rows.append((name, last["rc"], last["stderr_lines"], last["tf"], statistics.median(walls), max(walls),
                         statistics.median(cpus),
                         last["stderr"].strip().splitlines()[-1] if last["stderr"].strip() else ""))
    where = subprocess.run([sys.executable, "-c", "import csst_sls_z; print(csst_sls_z.__file__)"], env=env,
                           capture_output=True, text=True, cwd=tempfile.gettempdir()).stdout.strip()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"python {platform.python_version()}, {os.cpu_count()} CPU(s), load average {load:.1f} at the end, "
          f"{args.repeat} runs per case, csst_sls_z from {where}\n")
    print("| case | exit | stderr lines | TensorFlow imported | wall s, median | wall s, max | CPU s, median "
          "| last stderr line |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rc, nerr, tf, med, mx, cpu, last in rows:
        tf_text = "-" if tf is None else ("yes" if tf else "no")
        print(f"| {name} | {rc} | {nerr} | {tf_text} | {med:.2f} | {mx:.2f} | {cpu:.2f} | `{last[:100]}` |")
    errors = [r for r in rows if not r[0].startswith("(reference)")]
    worst = max(r[4] for r in errors)
    print(f"\nslowest error, median wall time: {worst:.2f} s (target under {TARGET_S:.0f} s): "
          f"{'met' if worst < TARGET_S else 'NOT met'}")
    return 0 if worst < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
