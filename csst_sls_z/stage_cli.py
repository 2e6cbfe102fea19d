"""``csst-sls-z run``: FITS products in, SLS_REDSHIFT catalogs out.

    csst-sls-z run IN.fits -o OUT.fits
    csst-sls-z run IN1.fits IN2.fits ... -o DIR

Exit codes: 0 ok, 1 error (any input failed, or bad reference files), 3 no spectra in input.

Every check that needs neither TensorFlow nor the network (the inputs exist and are FITS
products, the output directory exists, no output would be replaced without --overwrite)
runs first, so a wrong command fails in well under a second. Each error is one line on
stderr, once; the stdout status line says why.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from .commands import Parser, add_log_level, add_stage_options, setup_logging, sigterm_as_interrupt, stage_params
from .datamodel import EXIT_ERROR, EXIT_NOTHING_TO_DO, EXIT_OK

PROG = "csst-sls-z run"


def parser():
    p = Parser(prog=PROG, description="Measure galaxy redshifts from CSST GV/GI slitless 1D "
                "spectra: preprocess (numba), the frozen CNN backbone and MNF Bayesian head, Beta "
                "calibration, ZWARN flags; writes the SLS_REDSHIFT extension (docs/stage.md). "
                f"Exit {EXIT_OK} ok (every input written), {EXIT_ERROR} error (an input, an output or the "
                f"reference set failed; one line per failure on stderr), {EXIT_NOTHING_TO_DO} nothing to do "
                "(no spectra in the input).")
    p.add_argument("inputs", nargs="+", type=Path, help="input products (Layout A or B FITS)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output file (one input) or existing directory (one <stem>_slsz.fits per input)")
    add_stage_options(p)         # from RedshiftStage.spec and its reference_types
    p.add_argument("--summary-json", type=Path, default=None, help="also write the result summary here")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (there is none either when stderr is not a terminal)")
    add_log_level(p, "default: WARNING (a successful run prints its status line and outputs); INFO lists the "
                     "reference files and each input; TensorFlow's own start-up log is shown only at DEBUG")
    return p


# ---------------------------------------------------------------- checks before any science
def check_output(target: Path, overwrite: bool):
    """Why ``target`` cannot be written (one sentence), or None."""
    if target.is_dir():
        return f"output {target} is a directory"
    if target.exists() and not overwrite:
        return f"output {target} exists; pass --overwrite to replace it"
    if not os.access(target.parent, os.W_OK | os.X_OK):
        return f"cannot write to output directory {target.parent} (permission denied)"
    return None


def check_input_file(path: Path):
    """Why ``path`` is not a FITS product, from its first bytes alone (one sentence), or None.

    The wording is the product reader's; this runs before its imports (astropy), so the
    commonest mistakes are reported fastest.
    """
    if not path.exists():
        return f"input product {path} does not exist"
    if path.is_dir():
        return f"input product {path} is a directory, not a FITS file"
    if not path.is_file():
        return f"input product {path} is not a regular file"
    try:
        with open(path, "rb") as fh:
            magic = fh.read(9)
    except OSError as exc:
        return f"input product {path} cannot be read ({exc.strerror or exc})"
    if not magic:
        return f"input product {path} is empty (0 bytes)"
    if magic[:2] != b"\x1f\x8b" and not magic.startswith(b"SIMPLE  ="):      # gzip, or plain FITS
        return f"input product {path} is not a FITS file (it does not begin with SIMPLE)"
    return None


@contextlib.contextmanager
def _reader_notes_once():
    """The stage opens each input again and logs its 'opened ...' line then; here only the
    reader's warnings pass (the reader says each of those once per file)."""
    reader_log = logging.getLogger("csst_sls_z.products")
    level = reader_log.level
    reader_log.setLevel(max(logging.WARNING, reader_log.getEffectiveLevel()))
    try:
        yield
    finally:
        reader_log.setLevel(level)


def preflight(inputs, output: Path, overwrite: bool, ignore_checksum: bool = False):
    """The checks that need no TensorFlow: milliseconds per input once the reader is imported.

    Returns ``(error, failures, ready)``: ``error`` is a sentence when nothing can run (the
    output), ``failures`` the (input, reason) of each input that cannot be processed, ``ready``
    the (input, number of objects) of the others. Inputs are opened with the stage's own
    reader, so its messages are the stage's.
    """
    first_bytes = [check_input_file(path) for path in inputs]
    if all(first_bytes):          # said without importing the reader (astropy): the fastest answer
        return None, [(str(p), reason) for p, reason in zip(inputs, first_bytes)], []
    from .stage import output_paths
    targets = output_paths(inputs, output)
    if isinstance(targets, str):
        return targets, [], []
    failures, ready = [], []
    for path, target, reason in zip(inputs, targets, first_bytes):
        reason = reason or check_output(target, overwrite)
        if reason is None:
            from .products import ProductError, open_product
            try:
                with _reader_notes_once(), open_product(path, ignore_checksum=ignore_checksum) as reader:
                    n_objects = reader.n_objects
            except ProductError as exc:
                reason = " ".join(str(exc).split())
            except OSError as exc:
                reason = f"input product {path} cannot be read ({exc.strerror or exc})"
            except Exception:     # not a known input problem: the stage meets it and reports it in its words
                n_objects = 0
        if reason:
            failures.append((str(path), reason))
        else:
            ready.append((path, n_objects))
    return None, failures, ready


class _PrintedByTheCommand(logging.Filter):
    """Drops the stage's ERROR records: the command prints each of those failures itself, once."""

    def filter(self, record):
        return not (record.name == "csst_sls_z.stage" and record.levelno >= logging.ERROR)


def _progress_stage(bar, **params):
    """A RedshiftStage that advances ``bar`` by the objects of every chunk it measures."""
    from .stage import RedshiftStage

    class ProgressStage(RedshiftStage):
        def measure_chunk(self, bands, n, chunk_index):
            measured = super().measure_chunk(bands, n, chunk_index)
            bar.update(n)
            return measured

    return ProgressStage(**params)


def status_line(result, n_inputs: int, cause: str | None = None) -> str:
    """The stdout summary: counts, and why when something failed or nothing was done."""
    failures = result.failures
    if result.status.value == "ERROR":
        cause = cause or (failures[0][1] if len(failures) == 1 else
                          f"{len(failures)} of {n_inputs} inputs failed" if failures else result.message)
        return f"status ERROR: nothing written: {cause}"
    counts = result.summary.get("zwarn_counts", {})
    line = (f"status {result.status.value}: {result.summary.get('n_objects', 0)} objects, "
            f"{counts.get('OK', 0)} with ZWARN == 0, {len(result.outputs)} output(s)")
    if failures:
        line += f"; {len(failures)} of {n_inputs} input(s) failed"
    elif result.status.value == "NO_DATA":
        line += f"; {result.message or 'no spectra in the input'}"
    return line


def _merge(result, failures, inputs):
    """Fold the preflight failures into the stage's result (input order kept)."""
    from .datamodel import StageStatus
    if not failures:
        return result
    own = result.message if result.status is StageStatus.ERROR and not result.failures else ""
    order = {str(p): i for i, p in enumerate(inputs)}
    result.failures = sorted(failures + list(result.failures), key=lambda f: order.get(f[0], len(order)))
    if not result.outputs:
        result.status = StageStatus.ERROR
        result.message = "; ".join(([own] if own else []) + [r for _, r in result.failures])
    elif result.status in (StageStatus.PERFECT, StageStatus.NO_DATA):
        result.status = StageStatus.WARNING
        result.message = f"{len(result.failures)} file(s) failed"
    return result


def _run_stage(args, ready):
    """The stage on the inputs that passed the checks, with a progress bar; returns its StageResult."""
    from tqdm import tqdm
    quiet = _PrintedByTheCommand()
    for handler in logging.getLogger().handlers:
        handler.addFilter(quiet)
    bar = tqdm(total=sum(n for _, n in ready), unit="obj", desc="run", dynamic_ncols=True,
               disable=True if args.no_progress else None)     # None: off when stderr is not a terminal
    try:
        stage = _progress_stage(bar, **stage_params(args))
        return stage.run([p for p, _ in ready], args.output)
    finally:
        bar.close()
        for handler in logging.getLogger().handlers:
            handler.removeFilter(quiet)


def check_summary_json(path: Path):
    """Why the --summary-json file cannot be written (one sentence), or None: checked before any science."""
    if path.is_dir():
        return f"cannot write the summary {path}: it is a directory"
    if not path.parent.is_dir():
        what = "is a file, not a directory" if path.parent.exists() else "does not exist"
        return f"cannot write the summary {path}: directory {path.parent} {what}"
    return None


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.log_level)
    from .datamodel import StageStatus
    from .stage import StageResult
    reason = check_summary_json(args.summary_json) if args.summary_json else None
    if reason:
        print(f"{PROG}: error: {reason}", file=sys.stderr)
        return EXIT_ERROR
    error, failures, ready = preflight(args.inputs, args.output, args.overwrite, args.ignore_checksum)
    if error or not ready:        # nothing can run: no TensorFlow, no network, well under a second
        result = _merge(StageResult(StageStatus.ERROR, message=error or ""), failures, args.inputs)
    elif not any(n for _, n in ready):      # no spectra anywhere: said before the network loads
        result = _merge(StageResult(StageStatus.NO_DATA, message="no spectra in the input"), failures, args.inputs)
    else:
        with sigterm_as_interrupt():     # SIGTERM (what schedulers send first) unwinds like Ctrl-C
            try:
                result = _run_stage(args, ready)
                if result.status is StageStatus.ERROR and not result.failures:
                    error = result.message            # the reference set or the output, not an input
                result = _merge(result, failures, args.inputs)
            except KeyboardInterrupt:     # Ctrl-C or SIGTERM: the writer has already removed its temporary file
                print(f"{PROG}: error: interrupted; outputs written before the interruption are complete, "
                      "the one being written was discarded", file=sys.stderr)
                return EXIT_ERROR
            except Exception as exc:      # the promise: one sentence, never a traceback
                print(f"{PROG}: error: unexpected failure ({type(exc).__name__}: {' '.join(str(exc).split())})",
                      file=sys.stderr)
                return EXIT_ERROR
    for reason in ([error] if error else []) + [reason for _, reason in result.failures]:
        print(f"{PROG}: error: {reason}", file=sys.stderr)
    summary_failed = False
    if args.summary_json:
        try:
            args.summary_json.write_text(json.dumps({"status": result.status.value, "outputs": result.outputs,
                                                     "failures": result.failures, "summary": result.summary},
                                                    indent=1, default=str))
        except OSError as exc:
            print(f"{PROG}: error: cannot write the summary {args.summary_json} ({exc.strerror or exc})",
                  file=sys.stderr)
            summary_failed = True
    print(status_line(result, len(args.inputs), cause=error))
    for out in result.outputs:
        print(out)
    return EXIT_ERROR if summary_failed else result.exit_code


if __name__ == "__main__":
    sys.exit(main())
