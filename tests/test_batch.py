"""``csst-sls-z batch``: Dask batch = serial stage, resumable after a kill, failures reported.

One LocalCluster of 2 workers serves the whole module (each worker builds the DUMMY
network once and keeps it), so the suite stays well under two minutes on two cores.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

pytest.importorskip("distributed")

from csst_sls_z.batch import SUMMARY_NAME, ZWARN_COUNT_COLUMNS, main as batch_main, run_batch  # noqa: E402
from csst_sls_z.datamodel import EXT_REDSHIFT, StageStatus  # noqa: E402
from csst_sls_z.stage import output_name  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = 4
IGNORED_KEYS = ("CHECKSUM", "DATASUM")


def _ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key.startswith("DATE")


def _assert_same_product(a: Path, b: Path):
    """Same HDUs, byte-identical data, same headers except dates and checksums."""
    with fits.open(a) as ha, fits.open(b) as hb:
        assert [h.name for h in ha] == [h.name for h in hb]
        for x, y in zip(ha, hb):
            kx = [(k, v) for k, v in x.header.items() if not _ignored(k)]
            ky = [(k, v) for k, v in y.header.items() if not _ignored(k)]
            assert kx == ky, f"{a.name} {x.name}: headers differ"
            if x.data is None:
                assert y.data is None
            elif isinstance(x, fits.BinTableHDU):
                for name in x.columns.names:
                    u, v = x.data[name], y.data[name]
                    if u.dtype == object:                          # variable-length arrays
                        assert [np.asarray(e).tobytes() for e in u] == [np.asarray(e).tobytes() for e in v]
                    elif np.asarray(u).dtype.kind == "f":
                        # float32 sums may differ in the last bit between a worker's TensorFlow
                        # (1 thread) and this process's (2 threads): same numbers to 1e-6, NaN in place.
                        np.testing.assert_allclose(np.asarray(u, float), np.asarray(v, float), rtol=1e-6,
                                                   atol=1e-7, err_msg=f"{a.name} {x.name}.{name}")
                    else:
                        assert np.asarray(u).tobytes() == np.asarray(v).tobytes(), f"{a.name} {x.name}.{name}"
            else:
                assert np.asarray(x.data).tobytes() == np.asarray(y.data).tobytes()


def _verifies(path: Path) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # astropy warns about the corrupted file on open
        with fits.open(path, checksum=True) as hdul:
            return all(h.verify_checksum() == 1 for h in hdul)


def _outputs(directory: Path):
    return sorted(directory.glob("*_slsz.fits"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, models):
    """3 small products of 15 objects each, alone in their directory."""
    from csst_sls_z.simulation import simulate_products
    d = tmp_path_factory.mktemp("batch_in")
    return simulate_products(45, 21, "test", 15, d, *models, progress=False)


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    from csst_sls_z.batch import local_cluster, quiet_dask
    quiet_dask()
    with local_cluster(2) as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def serial_dir(inputs, dummy_refset, tmp_path_factory):
    from csst_sls_z.stage import RedshiftStage
    out = tmp_path_factory.mktemp("serial")
    for path in inputs:                       # one stage run per file, in this process
        result = RedshiftStage(reference_dir=dummy_refset, samples=SAMPLES).run([path], out)
        assert result.status in (StageStatus.PERFECT, StageStatus.WARNING)
    return out


@pytest.fixture(scope="module")
def batch_dir(inputs, dummy_refset, client, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch") / "out"
    result = run_batch(inputs, out, client=client, samples=SAMPLES, reference_dir=dummy_refset, progress=False)
    assert result.exit_code == 0, result.rows
    return out


def test_batch_equals_serial_stage(inputs, serial_dir, batch_dir):
    outs = _outputs(batch_dir)
    assert [p.name for p in outs] == [output_name(p) for p in inputs]
    assert [p.name for p in outs] == [p.name for p in _outputs(serial_dir)]
    for p in outs:
        assert _verifies(p)
        _assert_same_product(p, serial_dir / p.name)
    summary = Table.read(batch_dir / f"{SUMMARY_NAME}.fits")
    ecsv = Table.read(batch_dir / f"{SUMMARY_NAME}.ecsv", format="ascii.ecsv")
    assert len(summary) == len(ecsv) == len(inputs)
    assert list(summary["INPUT"]) == [str(p) for p in inputs]
    assert set(ZWARN_COUNT_COLUMNS) <= set(summary.colnames)
    assert all(s in ("PERFECT", "WARNING") for s in summary["STATUS"])
    assert list(summary["N_OBJECTS"]) == [15, 15, 15]
    for row, out in zip(summary, outs):
        from conftest import sha256
        assert row["SHA256"] == sha256(out)
        cat = fits.getdata(out, EXT_REDSHIFT)
        assert row["N_OK"] == int(np.count_nonzero(cat["ZWARN"] == 0))


def test_kill_and_resume(inputs, dummy_refset, client, batch_dir, tmp_path):
    indir = Path(inputs[0]).parent
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "csst_sls_z.cli", "batch", str(indir), "-o", str(out), "--samples", str(SAMPLES),
           "--reference-dir", str(dummy_refset), "--workers", "1", "--no-progress", "--log-level", "WARNING"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None and not (out.is_dir() and _outputs(out)):
            time.sleep(0.02)
        assert _outputs(out), "no output appeared"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)    # the client, its scheduler and its workers
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
    n_before = len(_outputs(out))
    assert 1 <= n_before < len(inputs), "the kill must leave work to resume"
    print(f"killed with {n_before} of {len(inputs)} outputs written; left: {sorted(p.name for p in out.iterdir())}")
    result = run_batch([indir], out, client=client, samples=SAMPLES, reference_dir=dummy_refset, progress=False)
    assert result.exit_code == 0
    assert [r["action"] for r in result.rows].count("skipped") == n_before
    assert [p.name for p in _outputs(out)] == [p.name for p in _outputs(batch_dir)]
    for p in _outputs(out):
        assert _verifies(p)
        _assert_same_product(p, batch_dir / p.name)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]        # no temporary file left
    for suffix, fmt in ((".fits", "fits"), (".ecsv", "ascii.ecsv")):
        summary = Table.read(out / f"{SUMMARY_NAME}{suffix}", format=fmt)
        assert sorted(summary["INPUT"]) == sorted(str(p) for p in inputs)
        assert list(summary["N_OBJECTS"]) == [15, 15, 15]


def test_scheduler_address_runs_on_an_existing_cluster(inputs, dummy_refset, client, batch_dir, tmp_path):
    """--scheduler-address: the same work on a running cluster (here the module's), same outputs."""
    out = tmp_path / "out"
    code = batch_main([*map(str, inputs), "-o", str(out), "--scheduler-address", client.scheduler.address,
                       "--samples", str(SAMPLES), "--reference-dir", str(dummy_refset), "--no-progress",
                       "--log-level", "WARNING"])
    assert code == 0
    assert [p.name for p in _outputs(out)] == [p.name for p in _outputs(batch_dir)]
    for p in _outputs(out):
        _assert_same_product(p, batch_dir / p.name)
    workers = set(Table.read(out / f"{SUMMARY_NAME}.ecsv", format="ascii.ecsv")["WORKER"])
    cluster_workers = set(client.run(lambda: f"{os.uname().nodename}:{os.getpid()}").values())
    assert workers and workers <= cluster_workers            # done by the running cluster's own workers


def test_resume_skips_verified_and_redoes_corrupted(inputs, dummy_refset, client, batch_dir, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(batch_dir, out)
    outs = _outputs(out)
    bad, stale = outs[0], outs[1]
    with fits.open(bad) as hdul:                 # flip one byte inside the SLS_REDSHIFT table
        offset = hdul[EXT_REDSHIFT].fileinfo()["datLoc"] + 20
    with open(bad, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))
    assert not _verifies(bad)
    with fits.open(stale, mode="update", checksum=True) as hdul:   # valid checksums, another reference set
        hdul[EXT_REDSHIFT].header["REFSET"] = "csst_sls_z_0000:000000000000"
    assert _verifies(stale)
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in outs}
    result = run_batch(inputs, out, client=client, samples=SAMPLES, reference_dir=dummy_refset, progress=False)
    assert result.exit_code == 0
    actions = {Path(r["output"]).name: r["action"] for r in result.rows}
    assert actions == {bad.name: "processed", stale.name: "processed", outs[2].name: "skipped"}
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in outs}
    assert after[outs[2].name] == before[outs[2].name]             # verified: not rewritten
    assert after[bad.name] != before[bad.name] and after[stale.name] != before[stale.name]
    for p in outs:
        assert _verifies(p)
        _assert_same_product(p, batch_dir / p.name)
    summary = Table.read(out / f"{SUMMARY_NAME}.ecsv", format="ascii.ecsv")
    assert list(summary["ACTION"]) == [actions[Path(o).name] for o in summary["OUTPUT"]]
    assert list(summary["N_OBJECTS"]) == [15, 15, 15]              # counts also for skipped files


def test_resume_redoes_an_output_whose_input_changed(inputs, dummy_refset, client, batch_dir, tmp_path, models):
    """An input replaced under the same name (another simulation) is processed again on resume."""
    from csst_sls_z.simulation import simulate_products
    indir, out = tmp_path / "in", tmp_path / "out"
    indir.mkdir()
    for p in inputs:
        shutil.copy(p, indir)
    shutil.copytree(batch_dir, out)
    replaced = indir / Path(inputs[1]).name
    (tmp_path / "other").mkdir()
    (new,) = simulate_products(15, 99, "test", 15, tmp_path / "other", *models, progress=False)
    shutil.copy(new, replaced)                   # same name, other spectra
    result = run_batch(sorted(indir.glob("*.fits")), out, client=client, samples=SAMPLES,
                       reference_dir=dummy_refset, progress=False)
    assert result.exit_code == 0
    actions = {Path(r["input"]).name: r["action"] for r in result.rows}
    assert actions == {Path(p).name: ("processed" if Path(p).name == replaced.name else "skipped") for p in inputs}
    from conftest import sha256
    redone = out / output_name(replaced)
    assert fits.getheader(redone, EXT_REDSHIFT)["INSHA256"] == sha256(replaced)


def test_bad_input_reported_others_processed(inputs, dummy_refset, client, tmp_path):
    indir = tmp_path / "in"
    indir.mkdir()
    for p in inputs[:2]:
        shutil.copy(p, indir)
    (indir / "bad.fits").write_bytes(b"SIMPLE  =   junk")
    out = tmp_path / "out"
    result = run_batch([indir, tmp_path / "missing.fits"], out, client=client, samples=SAMPLES,
                       reference_dir=dummy_refset, progress=False)
    assert result.exit_code == 1
    summary = Table.read(out / f"{SUMMARY_NAME}.fits")
    rows = {Path(r["INPUT"]).name: r for r in summary}
    assert set(rows) == {"bad.fits", "missing.fits"} | {Path(p).name for p in inputs[:2]}
    for name in ("bad.fits", "missing.fits"):
        assert rows[name]["STATUS"] == "ERROR" and name in rows[name]["REASON"]
    for p in inputs[:2]:
        r = rows[Path(p).name]
        assert r["STATUS"] in ("PERFECT", "WARNING") and r["N_OBJECTS"] == 15 and not r["REASON"]
        assert _verifies(out / output_name(p))
    assert not (out / "bad_slsz.fits").exists()


def test_nothing_to_do_exit_3(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert batch_main([str(tmp_path / "empty"), "-o", str(tmp_path / "out"), "--no-progress"]) == 3
    assert batch_main([str(tmp_path / "nomatch*.fits"), "-o", str(tmp_path / "out"), "--no-progress"]) == 3
    assert "Traceback" not in capsys.readouterr().err
    assert len(Table.read(tmp_path / "out" / f"{SUMMARY_NAME}.ecsv", format="ascii.ecsv")) == 0


def test_help_is_fast_and_imports_no_tensorflow():
    code = ("import sys, contextlib, io\n"
            "from csst_sls_z.cli import main\n"
            "buf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n"
            "    try:\n"
            "        main(['batch', '--help'])\n"
            "    except SystemExit as exc:\n"
            "        assert not exc.code, exc.code\n"
            "assert '--scheduler-address' in buf.getvalue()\n"
            "heavy = [m for m in ('tensorflow', 'keras', 'distributed', 'dask') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    t0 = time.time()
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout
    assert time.time() - t0 < 20          # generous: the machine may be busy; TensorFlow alone takes ~10 s


def test_a_second_batch_into_the_same_directory_is_refused(inputs, tmp_path, capsys):
    """Issue 16 case 7: one batch at a time per output directory (an flock on
    DIR/.csst_sls_z_batch.lock): a second one is refused in one sentence before it reads,
    writes or removes anything; the lock goes when the first finishes."""
    from csst_sls_z.batch import LOCK_NAME, batch_lock as OutputDirectoryLock
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious_slsz.fits").write_text("another batch's finished output")
    first = OutputDirectoryLock(out)
    assert first.acquire() == ""
    try:
        code = batch_main([*map(str, inputs), "-o", str(out), "--no-progress", "--log-level", "WARNING"])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("csst-sls-z batch: error:")]
        assert code == 1 and len(lines) == 1 and "Traceback" not in err
        assert "in use by another csst-sls-z batch" in lines[0] and f"{os.getpid()}" in lines[0]
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME, "precious_slsz.fits"]   # nothing touched
        assert OutputDirectoryLock(out).acquire() != ""
    finally:
        first.release()
    assert not (out / LOCK_NAME).exists()
    again = OutputDirectoryLock(out)
    assert again.acquire() == ""
    again.release()


def test_only_abandoned_temporary_files_are_removed(tmp_path):
    """Issue 16 case 7: the batch removes a killed write's leftover temporary file, never one a live
    writer holds (every writer keeps an flock on its temporary file until it renames or removes it)."""
    from csst_sls_z.durable import remove_stale_temps as _remove_stale_temps
    from csst_sls_z.durable import TempFile
    target = tmp_path / "a_slsz.fits"
    live = TempFile(target)                                  # another run, still writing
    live.path.write_bytes(b"half of another run's output")
    abandoned = tmp_path / ".a_slsz.fits.0123abcd.tmp"       # what a SIGKILLed run leaves
    abandoned.write_bytes(b"left by a killed run")
    unrelated = tmp_path / ".b_slsz.fits.0123abcd.tmp"
    unrelated.write_bytes(b"another output's")
    _remove_stale_temps(target)
    assert live.path.read_bytes() == b"half of another run's output"
    assert not abandoned.exists() and unrelated.exists()
    live.discard()
    assert not live.path.exists()


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_in_one_sentence(inputs, dummy_refset, tmp_path):
    """SIGINT to the whole process group (what Ctrl-C sends) mid-batch: one sentence on stderr (no
    worker traceback), exit 1, no output written after the signal, and a rerun finishes the job."""
    indir = tmp_path / "in"
    indir.mkdir()
    for k in range(3):                           # 9 small files: the batch is mid-way at the first output
        for p in inputs:
            shutil.copy(p, indir / f"{k}_{Path(p).name}")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "csst_sls_z.cli", "batch", str(indir), "-o", str(out), "--samples", str(SAMPLES),
           "--reference-dir", str(dummy_refset), "--workers", "2", "--no-progress", "--log-level", "WARNING"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (out.is_dir() and _outputs(out)):
        time.sleep(0.05)
    assert proc.poll() is None and _outputs(out), "the batch finished or wrote nothing before the signal"
    os.killpg(proc.pid, signal.SIGINT)
    sent = time.time()
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    # TensorFlow's own C++ start-up lines (absl, CUDA probing) may precede it; nothing of Python or Dask.
    ours = [line for line in stderr.splitlines() if line.strip() and not line.startswith(("WARNING: All log",
                                                                                           "I0000", "E0000", "W0000"))]
    assert ours == ["csst-sls-z batch: error: interrupted; finished outputs are complete and verified on the next "
                    "run, the rest will be redone by rerunning the same command"], stderr
    time.sleep(2.0)                              # a worker left running would write within this
    assert not [p for p in _outputs(out) if p.stat().st_mtime > sent], "an output was written after Ctrl-C"
    assert len(_outputs(out)) < 9
    assert batch_main([str(indir), "-o", str(out), "--samples", str(SAMPLES), "--reference-dir", str(dummy_refset),
                       "--workers", "1", "--no-progress", "--log-level", "WARNING"]) == 0
    assert len(_outputs(out)) == 9 and all(_verifies(p) for p in _outputs(out))
