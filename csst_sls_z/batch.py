"""``csst-sls-z batch``: the redshift stage over many products on Dask, resumable.

    csst-sls-z batch INPUTS... -o DIR [--workers N] [--scheduler-address ADDR]

INPUTS are products, directories (their FITS files, not recursive) or globs. Each input
gives ``DIR/<stem>_slsz.fits`` (the stage's directory naming, ``stage.output_paths``),
and ``DIR/batch_summary.fits`` + ``DIR/batch_summary.ecsv`` list one row per input.

One Dask task per file; by default on a ``LocalCluster`` of single-threaded worker
processes sized to the machine, or on an existing cluster (``--scheduler-address``).
Every worker validates and loads the reference set and builds the network once, and keeps
them (a module-level cache keyed by the reference set and the sampling parameters). A
file streams through its worker in chunks, as in the stage.

Resume: an existing output is kept only if it *verifies*: every HDU's FITS checksum holds
and its provenance (REFSET = manifest id, every REFTYP/REFNAM/REFSHA card and the P_*
parameter cards) is what this run would write. Anything else is redone, overwriting it.
Outputs are written atomically by the stage (temporary file beside the target, then
rename), so killing a batch at any moment and rerunning it ends with the outputs of an
uninterrupted run. Leftover temporary files of a killed write are removed when their
target is redone; a temporary file that a live process holds (every writer keeps an
``flock`` on its own) is never touched. A failed file is reported in the summary and
never stops the batch.

One batch at a time per output directory: the client holds an exclusive ``flock`` on
``DIR/.csst_sls_z_batch.lock`` for the whole run; a second batch into the same
directory is refused with one sentence before it does anything.

Exit codes: 0 all ok (including: everything already done), 1 any input failed or the
reference set is unusable, 3 nothing to do (no inputs, or every input without spectra).

The Python entry is :func:`run_batch`; it needs neither TensorFlow nor Dask to be
imported until it runs, so ``--help`` is quick.
"""
from __future__ import annotations

import copy
import glob
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .commands import (Parser, add_log_level, add_stage_options, positive_int, setup_logging, show_progress,
                       sigterm_as_interrupt, stage_params)
from .durable import OutputDirectoryLock, TempFile, remove_stale_temps
from .datamodel import (EXIT_ERROR, EXIT_NOTHING_TO_DO, EXIT_OK, KW_INPUT_SHA256, KW_REFSET,
                        PROVENANCE_MATCH_PREFIXES, ZWarn)

log = logging.getLogger(__name__)

SUMMARY_NAME = "batch_summary"
LOCK_NAME = ".csst_sls_z_batch.lock"      # in the output directory, while a batch runs


def batch_lock(directory: Path) -> OutputDirectoryLock:
    """One batch at a time per output directory (``durable.OutputDirectoryLock`` on ``LOCK_NAME``)."""
    return OutputDirectoryLock(directory, LOCK_NAME, "csst-sls-z batch")
INPUT_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz", ".fz")
OUTPUT_SUFFIX = "_slsz.fits"

# Summary columns: name -> (dtype, unit, doc). ZWARN counts follow N_OBJECTS.
ZWARN_COUNT_COLUMNS = tuple(f"N_{flag.name}" for flag in ZWarn)


# ============================================================ the worker side
_CACHE: dict = {}                 # the stage's parameters (less overwrite) -> RedshiftStage
_CACHE_LOCK = threading.Lock()
_LOGGING_SET = False
# The one parameter a task may change: an output that fails verification is redone over itself.
PER_TASK_PARAMS = ("overwrite",)


def _cache_key(pars: dict) -> tuple:
    def hashable(value):
        if isinstance(value, dict):
            return tuple(sorted((str(k), str(v)) for k, v in value.items()))
        return str(value) if isinstance(value, Path) else value
    return tuple(sorted((k, hashable(v)) for k, v in pars.items() if k not in PER_TASK_PARAMS))


def _base_stage(pars: dict, log_level=None):
    """The worker's stage for these parameters (``RedshiftStage.get_pars`` of the client's stage,
    every one of its spec): built once, then kept, with its references and network."""
    global _LOGGING_SET
    if not _LOGGING_SET and log_level and not logging.getLogger().handlers:
        setup_logging(log_level)
        _LOGGING_SET = True
    key = _cache_key(pars)
    with _CACHE_LOCK:
        stage = _CACHE.get(key)
        if stage is None:
            from .stage import RedshiftStage
            stage = RedshiftStage(**pars)
            stage.load_references(announce=False)      # validated (sha256) once per worker; the client names them
            _CACHE[key] = stage
        return stage


def _file_stage(base, overwrite: bool, need_network: bool):
    """A per-task view of the cached stage sharing its references and network; only
    ``PER_TASK_PARAMS`` differ from the client's parameters."""
    if need_network:
        with _CACHE_LOCK:
            base.sampler()                   # build the network once, before sharing it
    stage = copy.copy(base)
    stage.params = {**base.params, "overwrite": bool(overwrite)}
    return stage


def expected_cards(stage) -> dict:
    """The provenance cards an output of ``stage`` must carry to count as done."""
    from .datamodel import StageStatus
    return {k: v for k, v, _ in stage.provenance_cards(StageStatus.PERFECT) if k.startswith(PROVENANCE_MATCH_PREFIXES)}


def process_one(input_path: str, out_path: str, pars: dict, job: dict) -> dict:
    """Dask task: make sure ``out_path`` holds the verified product of ``input_path``.

    ``pars``: the stage's parameters as the client checked them (``RedshiftStage.get_pars``);
    ``job``: what the batch adds (``expected`` provenance cards, ``log_level``). Returns a
    summary row (dict). Never raises for a bad input: the reason is in the row.
    """
    from .products.output_reader import verify_output
    from .reffiles.sets import sha256_file
    t0 = time.time()
    out = Path(out_path)
    row = {"input": str(input_path), "output": str(out_path), "action": "failed", "status": "ERROR",
           "n_objects": 0, "zwarn": {}, "wall_s": 0.0, "sha256": "", "reason": "",
           "worker": f"{os.uname().nodename}:{os.getpid()}"}
    try:
        base = _base_stage(pars, job.get("log_level"))
        expected = job.get("expected") or expected_cards(_file_stage(base, False, need_network=False))
        overwrite = bool(pars.get("overwrite"))
        remove_stale_temps(out)
        if out.exists() and not overwrite:
            ok, why, info = verify_output(out, {**expected, KW_INPUT_SHA256: sha256_file(input_path)},
                                          bool(pars.get("ignore_checksum")))
            if ok:
                row.update(action="skipped", status=info["status"], n_objects=info["n_objects"],
                           zwarn=info["zwarn"], sha256=sha256_file(out), wall_s=time.time() - t0)
                return row
            log.warning("redoing %s: %s", out, why)
            overwrite = True
        stage = _file_stage(base, overwrite, need_network=True)
        info = stage.process_file(Path(input_path), out)
        if info["n_objects"] == 0:
            row.update(action="processed", status="NO_DATA", reason="no spectra in the input")
        else:
            row.update(action="processed", status=info["status"], n_objects=info["n_objects"],
                       zwarn=info["zwarn"], sha256=sha256_file(out))
    except Exception as exc:          # one bad file never stops the batch
        row["reason"] = " ".join(str(exc).split()) or type(exc).__name__
        log.error("%s: %s", input_path, row["reason"])
    row["wall_s"] = time.time() - t0
    return row


# ============================================================ the client side
@dataclass
class BatchResult:
    rows: list = field(default_factory=list)          # one dict per input, in input order
    summary_paths: list = field(default_factory=list)
    error: str = ""                                   # why nothing could run (bad reference set, ...)
    message: str = ""                                 # a note, e.g. "no input products"
    wall_s: float = 0.0

    @property
    def failures(self):
        return [(r["input"], r["reason"]) for r in self.rows if r["status"] == "ERROR"]

    @property
    def exit_code(self) -> int:
        if self.error or self.failures:
            return EXIT_ERROR
        if not self.rows or all(r["status"] == "NO_DATA" for r in self.rows):
            return EXIT_NOTHING_TO_DO
        return EXIT_OK


def _is_input_name(name: str) -> bool:
    low = name.lower()
    return not name.startswith(".") and low.endswith(INPUT_SUFFIXES)


def expand_inputs(args, output_dir: Path | None = None) -> list[Path]:
    """Products, directories (their FITS files) and globs -> a de-duplicated list of paths.

    Files found in directories or by globs that are this batch's own outputs
    (``*_slsz.fits`` in ``output_dir``) are left out; a path named explicitly is kept even
    if missing (it is then reported as failed).
    """
    out_res = Path(output_dir).resolve() if output_dir is not None else None

    def own_output(p: Path) -> bool:
        return out_res is not None and p.name.endswith(OUTPUT_SUFFIX) and p.resolve().parent == out_res

    paths, seen = [], set()

    def add(p: Path):
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            paths.append(p)

    for arg in args:
        arg = str(arg)
        p = Path(arg)
        if p.is_dir():
            for child in sorted(p.iterdir()):
                if child.is_file() and _is_input_name(child.name) and not own_output(child):
                    add(child)
        elif not p.exists() and glob.has_magic(arg):
            matches = [Path(m) for m in sorted(glob.glob(arg)) if Path(m).is_file()]
            matches = [m for m in matches if not own_output(m)]
            if not matches:
                log.warning("no file matches %s", arg)
            for m in matches:
                add(m)
        else:
            add(p)
    return paths


def _summary_table(rows):
    import numpy as np
    from astropy.table import Table
    zcols = {name: [int(r["zwarn"].get(name[2:], 0)) for r in rows] for name in ZWARN_COUNT_COLUMNS}
    t = Table()
    t["INPUT"] = np.array([r["input"] for r in rows], dtype=str)
    t["OUTPUT"] = np.array([r["output"] for r in rows], dtype=str)
    t["STATUS"] = np.array([r["status"] for r in rows], dtype=str)
    t["ACTION"] = np.array([r["action"] for r in rows], dtype=str)
    t["N_OBJECTS"] = np.array([r["n_objects"] for r in rows], dtype=np.int64)
    t["N_OK"] = np.array([int(r["zwarn"].get("OK", 0)) for r in rows], dtype=np.int64)
    for name in ZWARN_COUNT_COLUMNS:
        t[name] = np.array(zcols[name], dtype=np.int64)
    t["WALL_S"] = np.array([r["wall_s"] for r in rows], dtype=np.float64)
    t["SHA256"] = np.array([r["sha256"] for r in rows], dtype=str)
    t["REASON"] = np.array([r["reason"] for r in rows], dtype=str)
    t["WORKER"] = np.array([r.get("worker", "") for r in rows], dtype=str)
    t["WALL_S"].unit = "s"
    descriptions = {"INPUT": "input product", "OUTPUT": "output product (<stem>_slsz.fits)",
                    "STATUS": "PERFECT, WARNING, NO_DATA or ERROR", "ACTION": "processed, skipped (verified "
                    "output kept) or failed", "N_OBJECTS": "objects in the catalogue", "N_OK": "objects with "
                    "ZWARN == 0", "WALL_S": "wall time of this file's task", "SHA256": "sha256 of the output file",
                    "REASON": "why the file failed", "WORKER": "host:pid of the worker"}
    for name in ZWARN_COUNT_COLUMNS:
        descriptions[name] = f"objects with ZWARN bit {name[2:]} set"
    for name, text in descriptions.items():
        t[name].description = text
    return t


def write_summary(rows, output_dir: Path, meta: dict | None = None) -> list[Path]:
    """Write DIR/batch_summary.fits and .ecsv atomically (temporary file, then rename)."""
    table = _summary_table(rows)
    table.meta.update(meta or {})
    written = []
    for suffix, fmt in ((".fits", "fits"), (".ecsv", "ascii.ecsv")):
        path = Path(output_dir) / f"{SUMMARY_NAME}{suffix}"
        with TempFile(path) as tmp:
            table.write(tmp.path, format=fmt, overwrite=True)
            tmp.commit()
        written.append(path)
    return written


def quiet_dask(level=logging.ERROR) -> None:
    """Dask's own INFO chatter (cluster start/stop) off; our per-file lines stay."""
    import distributed  # noqa: F401 - its import configures its loggers, so set levels after it
    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("distributed", "tornado", "bokeh"):
            logging.getLogger(name).setLevel(level)


def _machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                 # pragma: no cover - not Linux
        return os.cpu_count() or 1


def local_cluster(n_workers: int | None = None, tf_threads: int | None = None, **kwargs):
    """A LocalCluster of single-threaded worker processes, sized to the machine by default.

    Each worker's TensorFlow gets ``tf_threads`` intra-op threads (default: cores / workers),
    so the workers share the cores instead of each taking all of them.
    """
    from distributed import LocalCluster
    cores = _machine_cores()
    n_workers = int(n_workers or cores)
    tf_threads = int(tf_threads or max(1, cores // n_workers))
    env = {"TF_NUM_INTRAOP_THREADS": str(tf_threads), "TF_NUM_INTEROP_THREADS": "1"}
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:   # the user's choice; else the workers' TensorFlow is quieted
        env["TF_CPP_MIN_LOG_LEVEL"] = os.environ["TF_CPP_MIN_LOG_LEVEL"]   # by csst_sls_z.tfenv
    kwargs.setdefault("dashboard_address", None)
    kwargs.setdefault("silence_logs", logging.ERROR)    # the workers' cancellation warnings on Ctrl-C
    # Ctrl-C reaches the whole process group: the client alone handles it (cancels the tasks,
    # closes the cluster). Worker processes started while SIGINT is ignored keep ignoring it
    # (Python installs its KeyboardInterrupt handler only over the default disposition), so they
    # print no traceback and are stopped by the client, not by the signal.
    import signal
    previous = None
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:                       # not the main thread: leave signals alone
        pass
    try:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)    # "Port 8787 is already in use": not the user's concern
            return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, env=env, **kwargs)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def run_batch(inputs, output_dir, *, workers: int | None = None, scheduler_address: str | None = None,
              client=None, progress: bool = True, log_level: str | None = None, **stage_params) -> BatchResult:
    """Run the stage over ``inputs`` (products, directories, globs) into ``output_dir``.

    ``client``: an existing ``distributed.Client`` (its cluster is used and left running);
    else ``scheduler_address`` connects to a running scheduler; else a LocalCluster of
    ``workers`` processes (default: one per core) is started for this call and shut down.
    ``stage_params`` are the stage's (any of ``RedshiftStage.spec``), checked once by a stage built
    here whose ``get_pars()`` every worker receives unchanged; ``overwrite`` redoes every output, even those that verify. ``ignore_checksum`` processes
    inputs whose FITS checksums fail. The output directory is locked for the whole call
    (:func:`batch_lock`). Returns a BatchResult.
    """
    from .products import missing_directory_reason
    t0 = time.time()
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = missing_directory_reason(output_dir)
        return BatchResult(error=why if why and "does not exist" not in why
                           else f"cannot create output directory {output_dir} ({exc.strerror or exc})")
    lock = batch_lock(output_dir)
    why = lock.acquire()
    if why:
        return BatchResult(error=why)
    try:
        return _run_batch_locked(inputs, output_dir, t0, workers=workers, scheduler_address=scheduler_address,
                                 client=client, progress=progress, log_level=log_level, stage_params=stage_params)
    finally:
        lock.release()


def _run_batch_locked(inputs, output_dir: Path, t0: float, *, workers, scheduler_address, client, progress,
                      log_level, stage_params) -> BatchResult:
    from .reffiles.sets import resolve_reference_dir
    from .reffiles.header import ReferenceFileError
    from .stage import RedshiftStage, output_paths
    paths = expand_inputs(inputs, output_dir)
    if not paths:
        result = BatchResult(message="no input products", wall_s=time.time() - t0)
        result.summary_paths = write_summary([], output_dir, {"WALL_S": round(result.wall_s, 3)})
        return result

    # Validate the reference set here, before any worker starts; the workers get the same,
    # fully resolved set (directory and overrides), so they cannot silently see another one.
    from .datamodel import ENV_REFERENCE_OVERRIDE_PREFIX, REFTYPES
    try:
        refdir = resolve_reference_dir(stage_params.get("reference_dir")).resolve()
    except ReferenceFileError as exc:
        return BatchResult(error=str(exc))
    overrides = {t: str(Path(os.environ[ENV_REFERENCE_OVERRIDE_PREFIX + t.upper()]).resolve()) for t in REFTYPES
                 if os.environ.get(ENV_REFERENCE_OVERRIDE_PREFIX + t.upper())}
    overrides.update({t: str(Path(v).resolve()) for t, v in (stage_params.get("reference_overrides") or {}).items()})
    try:
        probe = RedshiftStage(**{**stage_params, "reference_dir": refdir, "reference_overrides": overrides or None})
        probe.load_references()
    except (ReferenceFileError, ValueError, TypeError) as exc:
        return BatchResult(error=str(exc))
    expected = expected_cards(probe)
    refset_id = probe.load_references()["set"].manifest_id

    rows: list = [None] * len(paths)
    targets = output_paths(paths, output_dir, unique=False)    # a shared output fails its row, below
    if isinstance(targets, str):       # e.g. an input that is its own output
        return BatchResult(error=targets)
    owner = {}
    for i, (p, t) in enumerate(zip(paths, targets)):
        why = ""
        if not p.is_file():
            why = f"input product {p} does not exist or is not a file"
        elif t.name in owner:
            why = f"its output {t.name} is also the output of {paths[owner[t.name]]}; rename one of them"
        if why:
            rows[i] = _failed_row(p, t, why)
        else:
            owner[t.name] = i
    todo = [i for i, r in enumerate(rows) if r is None]
    # One parameter set, checked once here, travels unchanged to every worker.
    pars = probe.get_pars()
    job = {"expected": expected, "log_level": log_level}
    log.info("batch: %d input(s), %d to check or process, reference set %s, output %s",
             len(paths), len(todo), refset_id, output_dir)

    # stale summary temporaries from a killed run (never a live writer's)
    for suffix in (".fits", ".ecsv"):
        remove_stale_temps(output_dir / f"{SUMMARY_NAME}{suffix}")

    interrupted = False
    if todo:
        interrupted = _run_tasks(todo, paths, targets, pars, job, rows, client=client,
                                 scheduler_address=scheduler_address, workers=workers, progress=progress)

    result = BatchResult(rows=rows, wall_s=time.time() - t0)
    if interrupted:
        result.error = ("interrupted; finished outputs are complete and verified on the next run, "
                        "the rest will be redone by rerunning the same command")
    # Every recorded parameter's value (defaults too), under its output card's keyword.
    from .datamodel import param_keyword
    meta = {KW_REFSET: refset_id, **{param_keyword(name): int(pars[name]) if isinstance(pars[name], bool) else pars[name]
                                     for name, param in RedshiftStage.spec.items() if param.recorded},
            "WALL_S": round(result.wall_s, 3)}
    result.summary_paths = write_summary(rows, output_dir, meta)
    return result


def _failed_row(path, target, reason, action="failed"):
    return {"input": str(path), "output": str(target), "action": action, "status": "ERROR", "n_objects": 0,
            "zwarn": {}, "wall_s": 0.0, "sha256": "", "reason": reason}


def _kill_workers(cluster) -> None:
    """SIGKILL the worker processes of our LocalCluster: a task in flight stops where it is (its
    temporary file is removed by the next run), so nothing is written after an interruption."""
    import signal
    for nanny in list(getattr(cluster, "workers", {}).values()):
        process = getattr(getattr(nanny, "process", None), "process", None)
        pid = getattr(process, "pid", None)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _run_tasks(todo, paths, targets, pars, job, rows, *, client, scheduler_address, workers, progress) -> bool:
    """Run the tasks, filling ``rows``; True if interrupted (Ctrl-C / SIGTERM)."""
    from distributed import Client, as_completed
    from tqdm import tqdm
    own_cluster = own_client = None
    interrupted = False
    futures = {}
    try:
        if client is None:
            if scheduler_address:
                own_client = client = Client(scheduler_address)
            else:
                own_cluster = local_cluster(min(int(workers or _machine_cores()), len(todo)))
                own_client = client = Client(own_cluster)
        log.info("dask: %s", client)
        for i in todo:
            fut = client.submit(process_one, str(paths[i]), str(targets[i]), pars, job, pure=False,
                                key=f"slsz-{i}-{targets[i].name}-{os.getpid()}-{time.time_ns()}")
            futures[fut] = i
        done = 0
        with tqdm(total=len(todo), unit="file", desc="batch", disable=not progress, file=sys.stderr) as bar:
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    row = fut.result()
                except Exception as exc:        # the worker died (KilledWorker), or the task could not run
                    row = _failed_row(paths[i], targets[i],
                                      " ".join(f"worker failure: {type(exc).__name__}: {exc}".split()))
                rows[i] = row
                done += 1
                bar.update(1)
                if row["status"] == "ERROR":
                    log.error("[%d/%d] %s failed: %s", done, len(todo), row["input"], row["reason"])
                else:
                    log.info("[%d/%d] %s: %s, %s, %d objects (%d usable), %.1f s -> %s", done, len(todo),
                             row["input"], row["action"], row["status"], row["n_objects"],
                             row["zwarn"].get("OK", 0), row["wall_s"], row["output"])
                fut.release()
    except KeyboardInterrupt:
        interrupted = True
        # The tasks in flight are cancelled and our cluster closed before the command says anything:
        # a file a worker was writing stays a temporary file (removed on the next run), never half an output.
        if log.getEffectiveLevel() > logging.DEBUG:
            quiet_dask(logging.CRITICAL)     # the scheduler's complaints about the tasks it loses
        try:
            if own_cluster is not None:      # ours: its workers are stopped at once, mid-task
                _kill_workers(own_cluster)
            elif client is not None and futures:
                client.cancel(list(futures), force=True)
        except Exception:                   # the cluster may already be going away
            pass
        for i in todo:
            if rows[i] is None:
                rows[i] = _failed_row(paths[i], targets[i], "interrupted before it finished", "interrupted")
    finally:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # distributed's CancelledError / closing-stream warnings
            if own_client is not None:
                own_client.close()
            if own_cluster is not None:
                own_cluster.close()
    return interrupted


# ============================================================ the command
def parser():
    p = Parser(prog="csst-sls-z batch", description="Run the redshift stage over many products on Dask "
                "(a LocalCluster sized to the machine, or an existing cluster), resumably: a rerun keeps "
                "every output whose checksums and reference-set provenance verify and redoes the rest. "
                "Writes DIR/<stem>_slsz.fits per input and DIR/batch_summary.{fits,ecsv} "
                "(docs/pipeline.md). Exit 0 ok, 1 any file failed, 3 nothing to do.")
    p.add_argument("inputs", nargs="*", help="input products, directories of products, or globs")
    p.add_argument("-o", "--output", type=Path, required=True, help="output directory (created if missing)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="worker processes of the local cluster (default: one per core)")
    p.add_argument("--scheduler-address", default=None,
                   help="use the running Dask cluster at this address (e.g. tcp://host:8786) instead")
    add_stage_options(p, help={"overwrite": "redo every output, even those that verify"})
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_log_level(p)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.log_level)
    if args.log_level != "DEBUG":
        quiet_dask()
    # SIGTERM (what a scheduler sends first) unwinds like Ctrl-C: summary written, cluster closed
    with sigterm_as_interrupt():
        try:
            result = run_batch(args.inputs, args.output, workers=args.workers,
                               scheduler_address=args.scheduler_address, progress=show_progress(args.no_progress),
                               log_level=args.log_level, **stage_params(args))
        except KeyboardInterrupt:
            print("csst-sls-z batch: error: interrupted; rerun the same command to finish", file=sys.stderr)
            return EXIT_ERROR
        except Exception as exc:      # the promise: one sentence, never a traceback
            print(f"csst-sls-z batch: error: unexpected failure ({type(exc).__name__}: "
                  f"{' '.join(str(exc).split())})", file=sys.stderr)
            return EXIT_ERROR
    if result.error:
        print(f"csst-sls-z batch: error: {result.error}", file=sys.stderr)
    elif result.message:
        print(f"csst-sls-z batch: {result.message}", file=sys.stderr)
    for path, reason in result.failures:
        if reason != "interrupted before it finished":
            print(f"csst-sls-z batch: error: {path}: {reason}", file=sys.stderr)
    rows = result.rows
    if result.error and not rows:        # refused before any input was looked at (a lock, the reference set)
        return result.exit_code
    n = {a: sum(1 for r in rows if r["action"] == a) for a in ("processed", "skipped", "failed", "interrupted")}
    print(f"batch: {len(rows)} input(s): {n['processed']} processed, {n['skipped']} already done, "
          f"{n['failed']} failed" + (f", {n['interrupted']} interrupted" if n["interrupted"] else "") +
          f"; {sum(r['n_objects'] for r in rows)} objects; {result.wall_s:.1f} s")
    for path in result.summary_paths:
        print(path)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
