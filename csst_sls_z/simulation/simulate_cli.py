"""``csst-sls-z simulate``: CSST GV/GI slitless 1D spectra as Layout A FITS products with a TRUTH table.

    csst-sls-z simulate --n 200 --seed 1 --population test --out demo

The command over :func:`csst_sls_z.simulation.simulate_products` (docs/simulation.md).
Exit 0 ok, 1 error (one sentence on stderr). No TensorFlow.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..commands import Parser, add_log_level, nonneg_int, positive_int, setup_logging, show_progress
from ..datamodel import EXIT_ERROR, EXIT_OK, KW_REFSET

PROG = "csst-sls-z simulate"


def parser(prog=PROG):
    p = Parser(prog=prog, description="Simulate CSST GV/GI slitless 1D spectra as Layout A FITS products "
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
    add_log_level(p)
    return p


def simulation_options(args):
    """SimOptions from simulate's arguments: the --variations preset, then single overrides."""
    from dataclasses import replace
    from . import TRAINING_VARIATIONS, SimOptions
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


def check_out_dir(out: Path) -> str | None:
    """Why ``out`` cannot be the output directory (one sentence), or None; it is created later if missing."""
    if out.exists():
        return None if out.is_dir() else f"output directory {out} is a file, not a directory"
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"output directory {out} cannot be created: {parent} is a file, not a directory"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"output directory {out} cannot be created in {parent} (permission denied)"
            break
    return None


def os_error_sentence(exc: OSError, out: Path) -> str:
    """An OSError as one sentence without its errno: what failed, on which file."""
    what = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    what = what[0].lower() + what[1:]
    if exc.filename is None:
        return f"a file operation failed ({what})"
    name = Path(exc.filename)
    return f"cannot {'write' if name.resolve().is_relative_to(out.resolve()) else 'read'} {name} ({what})"


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.log_level)
    from ..reffiles.header import ReferenceFileError
    from . import load_models, simulate_products
    from .families import DEFAULT_FAMILIES, FamilySet, FamilyUnavailable
    for name in ("mask_run_prob", "missing_band_prob"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            print(f"{PROG}: error: --{name.replace('_', '-')} must be in [0, 1]", file=sys.stderr)
            return EXIT_ERROR
    reason = check_out_dir(args.out)
    if reason:
        print(f"{PROG}: error: {reason}", file=sys.stderr)
        return EXIT_ERROR
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        instrument, sedlib, refset = load_models(args.reference_dir)
        options = simulation_options(args)
        families = FamilySet(sedlib, args.families or DEFAULT_FAMILIES, sps_library=args.sps_library)
        paths = simulate_products(args.n, args.seed, args.population, args.per_file, args.out, instrument,
                                  families, options, overwrite=args.overwrite,
                                  progress=show_progress(args.no_progress),
                                  provenance={KW_REFSET: (refset.manifest_id, "reference set used")})
    except (ReferenceFileError, ValueError, FamilyUnavailable) as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:       # our own refusals (an existing product) are sentences; the system's are errno text
        text = str(exc) if exc.errno is None else os_error_sentence(exc, args.out)
        print(f"{PROG}: error: {' '.join(text.split())}", file=sys.stderr)
        return EXIT_ERROR
    for path in paths:
        print(path)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
