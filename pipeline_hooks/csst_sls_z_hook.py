"""The scheduler's entry to the redshift stage: only an adapter, no science.

    python -m pipeline_hooks.csst_sls_z_hook --inputs A.fits B.fits --output-dir OUT [--reference-dir REF]
        [stage options: --samples, --seed, --chunk-size, ..., --override-<reftype> PATH]

The stage options are generated from ``RedshiftStage.spec`` (``csst_sls_z.commands``), so
they are ``csst-sls-z run``'s, with the same defaults, bounds and help.

Exit codes (= ``run_stage``'s return): 0 ok (PERFECT or WARNING), 1 error, 3 no spectra
in the input. ``CsstSlsZProcessor`` offers the same in the shape of the public ``csst``
package's ``CsstProcessor`` (prepare / run / cleanup, returning ``CsstProcStatus``).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from csst_sls_z.datamodel import EXIT_ERROR, StageStatus

log = logging.getLogger(__name__)


def run_stage(input_paths, output_dir, reference_dir=None, **params):
    """Run the stage on ``input_paths`` into ``output_dir``; returns (exit_code, StageResult)."""
    from csst_sls_z.stage import RedshiftStage, StageResult
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        stage = RedshiftStage(reference_dir=reference_dir, **params)
        result = stage.run([Path(p) for p in input_paths], output_dir)
    except Exception as exc:          # the scheduler gets a status, never a traceback
        log.error("stage failed: %s", exc)
        result = StageResult(StageStatus.ERROR, message=str(exc))
    return result.exit_code, result


try:   # the public CSST pipeline package is optional
    from csst.common.processors import CsstProcessor, CsstProcStatus
except ImportError:                   # pragma: no cover - exercised when csst is absent
    CsstProcessor, CsstProcStatus = object, None


class CsstSlsZProcessor(CsstProcessor):
    """csst_sls_z as a CSST pipeline processor: prepare(), run(data), cleanup().

    ``data`` is a dict (or an object with attributes) holding ``inputs`` (paths),
    ``output_dir`` and optionally ``reference_dir``. Our statuses map onto CsstProcStatus:
    PERFECT/WARNING with every input written -> normal, NO_DATA -> empty, any input that
    could not be read or written -> ioerror (also when others succeeded: the scheduler must
    see the loss), any other ERROR -> runtimeerror.
    """

    def __init__(self):
        self.params = {}
        self.result = None
        self._status = CsstProcStatus.empty if CsstProcStatus else None

    def prepare(self, **kwargs):
        self.params = dict(kwargs)

    def run(self, data):
        get = (lambda k, d=None: data.get(k, d)) if isinstance(data, dict) else (lambda k, d=None: getattr(data, k, d))
        code, self.result = run_stage(get("inputs"), get("output_dir"), get("reference_dir"), **self.params)
        status = self.result.status
        if CsstProcStatus is None:
            return status
        if self.result.failures:
            self._status = CsstProcStatus.ioerror
        elif status in (StageStatus.PERFECT, StageStatus.WARNING):
            self._status = CsstProcStatus.normal
        elif status is StageStatus.NO_DATA:
            self._status = CsstProcStatus.empty
        else:
            self._status = CsstProcStatus.runtimeerror
        return self._status

    def cleanup(self):
        self.params = {}


def parser():
    from csst_sls_z.commands import Parser, add_log_level, add_stage_options
    p = Parser(prog="python -m pipeline_hooks.csst_sls_z_hook",
               description="CSST scheduler entry to the csst_sls_z redshift stage. Exit 0 ok, 1 error, "
                           "3 no spectra in the input.")
    p.add_argument("--inputs", nargs="+", required=True, type=Path, help="input spectra products")
    p.add_argument("--output-dir", required=True, type=Path, help="where the SLS_REDSHIFT products go")
    # The stage's own options, from RedshiftStage.spec and its reference_types (as run and batch).
    add_stage_options(p, help={"overwrite": "replace outputs of an earlier run of this job"})
    add_log_level(p, "default: INFO, for the scheduler's log (each reference file with its sha256); "
                     "TensorFlow's own start-up log is shown only at DEBUG", default="INFO")
    return p


def main(argv=None) -> int:
    from csst_sls_z.commands import setup_logging, stage_params
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:        # --help (0), or a bad argument (1, in one line)
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    setup_logging(args.log_level)
    params = stage_params(args)
    # The checks that need no TensorFlow first (``run``'s): a missing input, an output in the way or
    # a product without spectra is answered in well under a second, not after the network loads.
    from csst_sls_z.products import missing_directory_reason
    from csst_sls_z.stage import StageResult
    from csst_sls_z.stage_cli import _merge, preflight
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = missing_directory_reason(args.output_dir) or f"cannot create {args.output_dir} ({exc.strerror or exc})"
        print(f"status {StageStatus.ERROR.value}: {why}")
        return EXIT_ERROR
    error, failures, ready = preflight(args.inputs, args.output_dir, params["overwrite"], params["ignore_checksum"])
    if error or not ready:
        result = _merge(StageResult(StageStatus.ERROR, message=error or ""), failures, args.inputs)
    elif not any(n for _, n in ready):
        result = _merge(StageResult(StageStatus.NO_DATA, message="no spectra in the input"), failures, args.inputs)
    else:
        _, result = run_stage([p for p, _ in ready], args.output_dir, params.pop("reference_dir"), **params)
        result = _merge(result, failures, args.inputs)
    code = result.exit_code
    print(f"status {result.status.value}: {result.message}".rstrip(": "))
    for out in result.outputs:
        print(out)
    return code


if __name__ == "__main__":
    sys.exit(main())
