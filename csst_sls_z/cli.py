"""The ``csst-sls-z`` command: simulate, run, regenerate.

Each subcommand is ``main(argv=None) -> int`` with exit 0 for success, 1 for an error and
3 (``datamodel.EXIT_NOTHING_TO_DO``) when there is nothing to do. Errors are one sentence
on stderr, never a traceback. TensorFlow is imported only by the subcommands that run a
network, and only once they need it, so ``--help`` is quick.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__
from .datamodel import EXIT_ERROR, EXIT_OK

log = logging.getLogger(__name__)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class CLIError(Exception):
    """A user-facing error: its message is printed as one line and the command exits 1."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments in one line and exits 1 (our error code), not 2."""

    def error(self, message):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def setup_logging(level: str = "INFO"):
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)


def _positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _nonneg_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, not {text}")
    return value


def add_stage_options(p):
    """The stage's own options, shared by ``run`` and ``batch``."""
    p.add_argument("--samples", type=_positive_int, default=200, help="BNN samples per spectrum")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seed of the BNN sampling noise")
    p.add_argument("--reference-dir", type=Path, default=None,
                   help="reference set (default: $CSST_SLS_Z_REFDIR, else the shipped set)")
    p.add_argument("--chunk-size", type=_positive_int, default=4096, help="objects per chunk in memory")
    p.add_argument("--catalog-only", action="store_true", help="write only the primary header and SLS_REDSHIFT")


# ---------------------------------------------------------------- simulate
def simulate_parser(prog="csst-sls-z simulate"):
    p = _Parser(prog=prog, description="Simulate CSST GV/GI slitless 1D spectra as Layout A FITS products "
                "with a TRUTH table (docs/simulation.md).")
    p.add_argument("--n", type=_positive_int, required=True, help="number of galaxies")
    p.add_argument("--seed", type=_nonneg_int, required=True, help="random seed; the same seed gives the same bytes")
    p.add_argument("--population", choices=("train", "test"), required=True,
                   help="train: z flat on [0, 1.6]; test: the CSST-like n(z) on (0, 1.5)")
    p.add_argument("--per-file", type=_positive_int, default=10000, help="objects per product file (default 10000)")
    p.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
    p.add_argument("--reference-dir", type=Path, default=None,
                   help="reference set with the instrument and sedlib files (default: the shipped set)")
    p.add_argument("--wave-shift", type=float, default=0.0, help="max wavelength-calibration shift, +-pixels")
    p.add_argument("--mask-run-prob", type=float, default=0.0, help="chance per band of a masked pixel run")
    p.add_argument("--missing-band-prob", type=float, default=0.0, help="chance that GV or GI is absent")
    p.add_argument("--overwrite", action="store_true", help="replace existing products")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="INFO")
    return p


def simulate_main(argv=None) -> int:
    args = simulate_parser().parse_args(argv)
    setup_logging(args.log_level)
    from .reffile import ReferenceFileError
    from .simulation import SimOptions, load_models, simulate_products
    for name in ("mask_run_prob", "missing_band_prob"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            print(f"csst-sls-z simulate: error: --{name.replace('_', '-')} must be in [0, 1]", file=sys.stderr)
            return EXIT_ERROR
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        instrument, sedlib, refset = load_models(args.reference_dir)
        options = SimOptions(wave_shift_max=args.wave_shift, mask_run_prob=args.mask_run_prob,
                             missing_band_prob=args.missing_band_prob)
        paths = simulate_products(args.n, args.seed, args.population, args.per_file, args.out, instrument,
                                  sedlib, options, overwrite=args.overwrite, progress=not args.no_progress,
                                  provenance={"REFSET": (refset.manifest_id, "reference set used")})
    except (ReferenceFileError, FileExistsError, OSError) as exc:
        print(f"csst-sls-z simulate: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for path in paths:
        print(path)
    return EXIT_OK


# ---------------------------------------------------------------- dispatch
COMMANDS = {
    "simulate": ("simulate CSST slitless spectra products", "csst_sls_z.cli:simulate_main"),
    "run": ("measure redshifts: FITS products in, SLS_REDSHIFT catalogs out", "csst_sls_z.stage_cli:main"),
    "regenerate": ("rebuild a complete reference set: simulate, train, calibrate, evaluate",
                   "csst_sls_z.training.regenerate:main"),
    "batch": ("the stage over many products on Dask, resumable", "csst_sls_z.batch:main"),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        lines = [f"usage: csst-sls-z {{{','.join(COMMANDS)}}} ...", "",
                 "Galaxy redshifts from CSST slitless spectra (Zhou et al. 2024), as a CSST pipeline stage.", "",
                 "commands:"]
        lines += [f"  {name:<11} {text}" for name, (text, _) in COMMANDS.items()]
        lines += ["", "Run 'csst-sls-z COMMAND --help' for a command's options."]
        print("\n".join(lines))
        return EXIT_OK if argv else EXIT_ERROR
    if argv[0] == "--version":
        print(f"csst-sls-z {__version__}")
        return EXIT_OK
    if argv[0] not in COMMANDS:
        print(f"csst-sls-z: error: unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return EXIT_ERROR
    module, func = COMMANDS[argv[0]][1].split(":")
    import importlib
    try:
        return getattr(importlib.import_module(module), func)(argv[1:])
    except SystemExit as exc:          # argparse's --help and usage errors: a code, not an exception
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
