"""``csst-sls-z run``: FITS products in, SLS_REDSHIFT catalogs out.

    csst-sls-z run IN.fits -o OUT.fits
    csst-sls-z run IN1.fits IN2.fits ... -o DIR

Exit codes: 0 ok, 1 error (any input failed, or bad reference files), 3 no spectra in input.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from .cli import LOG_LEVELS, _Parser, _positive_int, add_stage_options, setup_logging
from .datamodel import EXIT_ERROR


def parser():
    p = _Parser(prog="csst-sls-z run", description="Measure galaxy redshifts from CSST GV/GI slitless 1D "
                "spectra: preprocess (numba), the frozen CNN backbone and MNF Bayesian head, Beta "
                "calibration, ZWARN flags; writes the SLS_REDSHIFT extension (docs/stage.md).",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, help="input products (Layout A or B FITS)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output file (one input) or existing directory (one <stem>_slsz.fits per input)")
    add_stage_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--summary-json", type=Path, default=None, help="also write the result summary here")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="INFO")
    return p


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _terminate_as_interrupt():
    """Make SIGTERM (what schedulers send first) unwind like Ctrl-C, so temporary files are removed.

    Returns a function that restores the previous handler.
    """
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:        # not the main thread: leave signals alone
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.log_level)
    from .stage import RedshiftStage
    restore_sigterm = _terminate_as_interrupt()
    try:
        stage = RedshiftStage(samples=args.samples, seed=args.seed, reference_dir=args.reference_dir,
                              chunk_size=args.chunk_size, catalog_only=args.catalog_only, overwrite=args.overwrite)
        result = stage.run(args.inputs, args.output)
    except KeyboardInterrupt:     # Ctrl-C or SIGTERM: the writer has already removed its temporary file
        print("csst-sls-z run: error: interrupted; outputs written before the interruption are complete, "
              "the one being written was discarded", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:      # the promise: one sentence, never a traceback
        print(f"csst-sls-z run: error: unexpected failure ({type(exc).__name__}: {' '.join(str(exc).split())})",
              file=sys.stderr)
        return EXIT_ERROR
    finally:
        restore_sigterm()
    for path, reason in result.failures:
        print(f"csst-sls-z run: error: {reason}", file=sys.stderr)
    if result.status.value == "ERROR" and not result.failures:
        print(f"csst-sls-z run: error: {result.message}", file=sys.stderr)
    summary_failed = False
    if args.summary_json:
        try:
            args.summary_json.write_text(json.dumps({"status": result.status.value, "outputs": result.outputs,
                                                     "failures": result.failures, "summary": result.summary},
                                                    indent=1, default=str))
        except OSError as exc:
            print(f"csst-sls-z run: error: cannot write the summary {args.summary_json} ({exc.strerror or exc})",
                  file=sys.stderr)
            summary_failed = True
    counts = result.summary.get("zwarn_counts", {})
    print(f"status {result.status.value}: {result.summary.get('n_objects', 0)} objects, "
          f"{counts.get('OK', 0)} with ZWARN == 0, {len(result.outputs)} output(s)")
    for out in result.outputs:
        print(out)
    return EXIT_ERROR if summary_failed else result.exit_code


if __name__ == "__main__":
    sys.exit(main())
