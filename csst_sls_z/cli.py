"""The ``csst-sls-z`` command: simulate, run, regenerate, batch, inspect.

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

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help, unless the help already names its default
    or there is none to name (None, False: a flag or an optional path)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is False or default is argparse.SUPPRESS
                or not action.option_strings or action.nargs == 0):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class TqdmLogHandler(logging.StreamHandler):
    """A stderr handler that writes through ``tqdm.write`` while a progress bar is live, so a log
    line never lands on the same line as a bar (and the bar is redrawn below it)."""

    def emit(self, record):
        bars = sys.modules.get("tqdm")
        if bars is None or not getattr(bars.tqdm, "_instances", None):
            return super().emit(record)
        try:
            bars.tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:      # logging must never raise
            self.handleError(record)


def setup_logging(level: str = "INFO"):
    handler = TqdmLogHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level), handlers=[handler], force=True)


def _int_argument(text, minimum, what):
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return value


def positive_int(text):
    """argparse type: an integer >= 1, with a message that names what is expected."""
    return _int_argument(text, 1, "a positive integer")


def nonneg_int(text):
    """argparse type: an integer >= 0, with a message that names what is expected."""
    return _int_argument(text, 0, "a non-negative integer")


_positive_int, _nonneg_int = positive_int, nonneg_int      # the names other modules import


def add_stage_options(p):
    """The stage's own options, shared by ``run`` and ``batch``."""
    p.add_argument("--samples", type=positive_int, default=200, help="BNN samples per spectrum (default: 200)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the BNN sampling noise (default: 0)")
    p.add_argument("--reference-dir", type=Path, default=None,
                   help="reference set (default: $CSST_SLS_Z_REFDIR, else the shipped set)")
    p.add_argument("--chunk-size", type=positive_int, default=4096,
                   help="objects per chunk in memory (default: 4096)")
    p.add_argument("--catalog-only", action="store_true", help="write only the primary header and SLS_REDSHIFT")


# ---------------------------------------------------------------- simulate
def simulate_parser(prog="csst-sls-z simulate"):
    p = _Parser(prog=prog, description="Simulate CSST GV/GI slitless 1D spectra as Layout A FITS products "
                "with a TRUTH table (docs/simulation.md).")
    p.add_argument("--n", type=positive_int, required=True, help="number of galaxies")
    p.add_argument("--seed", type=nonneg_int, required=True, help="random seed; the same seed gives the same bytes")
    p.add_argument("--population", choices=("train", "test"), required=True,
                   help="train: z flat on [0, 1.6]; test: the CSST-like n(z) on (0, 1.5)")
    p.add_argument("--per-file", type=positive_int, default=10000, help="objects per product file (default: 10000)")
    p.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
    p.add_argument("--reference-dir", type=Path, default=None,
                   help="reference set with the instrument and sedlib files (default: the shipped set)")
    p.add_argument("--wave-shift", type=float, default=0.0, help="max wavelength-calibration shift, +-pixels")
    p.add_argument("--mask-run-prob", type=float, default=0.0, help="chance per band of a masked pixel run")
    p.add_argument("--missing-band-prob", type=float, default=0.0, help="chance that GV or GI is absent")
    g = p.add_argument_group("galaxies (docs/simulation.md, 'SED families')")
    g.add_argument("--families", default=None, metavar="NAME[:W],...",
                   help="SED families and mixture weights, e.g. SPS:0.5,KCORRECT:0.3,REDROCK2016:0.2 "
                        "(default: REDROCK2016:0.2,KCORRECT:0.8; SPS needs the sps extra)")
    g.add_argument("--sps-library", type=Path, default=None, metavar="FITS",
                   help="a stellar-population library built by regenerate (default: build a small seeded one)")
    v = p.add_argument_group("instrument variations (docs/simulation.md; off unless given)")
    v.add_argument("--variations", choices=("nominal", "training"), default="nominal",
                   help="training: every variation at the range the training sets use; the options "
                        "below override single ranges")
    v.add_argument("--resolution-range", type=float, nargs=2, metavar=("LO", "HI"), help="R = lambda/FWHM")
    v.add_argument("--psf-added-prob", type=float, help="chance the PSF is added to the LSF, not inside R")
    v.add_argument("--disp-scale-range", type=float, nargs=2, metavar=("LO", "HI"),
                   help="true / nominal dispersion")
    v.add_argument("--err-scale-range", type=float, nargs=2, metavar=("LO", "HI"), help="reported ERR / true sigma")
    v.add_argument("--flux-tilt-range", type=float, nargs=2, metavar=("LO", "HI"),
                   help="flux-calibration error at 10500 A (fraction)")
    v.add_argument("--sky-scale-range", type=float, nargs=2, metavar=("LO", "HI"), help="sky level / nominal")
    v.add_argument("--gauss-kernel-prob", type=float, help="chance the self-broadening kernel is a Gaussian")
    p.add_argument("--overwrite", action="store_true",
                   help="replace products of the same name from an earlier run (each replaced atomically)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="INFO", help="default: INFO")
    return p


def simulation_options(args):
    """SimOptions from simulate's arguments: the --variations preset, then single overrides."""
    from dataclasses import replace
    from .simulation import TRAINING_VARIATIONS, SimOptions
    base = TRAINING_VARIATIONS if args.variations == "training" else SimOptions()
    changes = {"mask_run_prob": args.mask_run_prob, "missing_band_prob": args.missing_band_prob}
    if args.wave_shift or args.variations != "training":
        changes["wave_shift_max"] = args.wave_shift
    for name in ("resolution_range", "disp_scale_range", "err_scale_range", "flux_tilt_range", "sky_scale_range"):
        value = getattr(args, name)
        if value is not None:
            lo, hi = value
            if not lo <= hi:
                raise ValueError(f"--{name.replace('_', '-')} needs LO <= HI, not {lo} {hi}")
            changes[name] = (lo, hi)
    for name in ("psf_added_prob", "gauss_kernel_prob"):
        value = getattr(args, name)
        if value is not None:
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], not {value}")
            changes[name] = value
    return replace(base, **changes)


def simulate_main(argv=None) -> int:
    args = simulate_parser().parse_args(argv)
    setup_logging(args.log_level)
    from .reffile import ReferenceFileError
    from .simulation import load_models, simulate_products
    from .simulation.families import DEFAULT_FAMILIES, FamilySet, FamilyUnavailable
    for name in ("mask_run_prob", "missing_band_prob"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            print(f"csst-sls-z simulate: error: --{name.replace('_', '-')} must be in [0, 1]", file=sys.stderr)
            return EXIT_ERROR
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        instrument, sedlib, refset = load_models(args.reference_dir)
        options = simulation_options(args)
        families = FamilySet(sedlib, args.families or DEFAULT_FAMILIES, sps_library=args.sps_library)
        paths = simulate_products(args.n, args.seed, args.population, args.per_file, args.out, instrument,
                                  families, options, overwrite=args.overwrite, progress=not args.no_progress,
                                  provenance={"REFSET": (refset.manifest_id, "reference set used")})
    except (ReferenceFileError, FileExistsError, OSError, ValueError, FamilyUnavailable) as exc:
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
    "inspect": ("summarise an SLS_REDSHIFT product: ZWARN bits, errors, metrics against the truth, a figure",
                "csst_sls_z.inspect_cli:main"),
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
