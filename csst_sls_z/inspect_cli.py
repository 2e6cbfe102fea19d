"""``csst-sls-z inspect``: read an SLS_REDSHIFT product the way a person would.

    csst-sls-z inspect OUT.fits [--truth IN.fits] [--plot FILE.png] [--z-bins 0,0.5,1,1.5]
    csst-sls-z inspect --zwarn 40

Prints a summary (objects, ZWARN == 0, each ZWARN bit by name with its count and meaning,
the median ZERR / (1 + Z), the SNR_GI quartiles); against the truth (``--truth``, or a
TRUTH extension in the file, matched on OBJID) sigma_NMAD, eta, E-bar and the mean bias,
overall and in z bins, computed by ``csst_sls_z.training.metrics``. ``--plot`` writes a
figure in the format its suffix names (.png, .pdf, .svg, ...): Z against Z_TRUE coloured by
SNR_GI (Z against SNR_GI without truth), the ZERR distribution with the LARGE_ZERR threshold,
the ZWARN counts, the p(z) of three example objects with Z, Z_ALT and Z_TRUE, and their
spectra on the network grid with the lines at Z marked. ``--zwarn N`` decodes a ZWARN value
and exits. No TensorFlow.

Exit codes: 0 ok, 1 error (one sentence on stderr).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .commands import Parser, nonneg_int, setup_logging
from .datamodel import EXIT_ERROR, EXIT_OK
from .inspect_figure import FIGURE_FORMATS, FigureError, check_figure_path, plot
from .inspect_summary import DEFAULT_Z_BINS, report, zwarn_text
from .products.fitsutil import ProductError
from .products.output_reader import read_output

PROG = "csst-sls-z inspect"


def parser():
    p = Parser(prog=PROG, description="Summarise an SLS_REDSHIFT product (output of csst-sls-z run): ZWARN "
                "bits with counts and meanings, uncertainties, SNR; metrics against the truth; a figure. "
                "Exit 0 ok, 1 error.")
    p.add_argument("product", nargs="?", type=Path, help="an output product holding SLS_REDSHIFT")
    p.add_argument("--truth", type=Path, default=None,
                   help="product with a TRUTH extension (the run's input), matched on OBJID "
                        "(default: the TRUTH extension of PRODUCT, if any)")
    p.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                   help="write a figure here, in the format its suffix names "
                        f"({', '.join('.' + f for f in FIGURE_FORMATS if f not in ('svgz', 'jpeg', 'tiff'))})")
    p.add_argument("--z-bins", type=_edges, default=None, metavar="EDGES",
                   help="comma-separated Z_TRUE bin edges for the binned metrics "
                        f"(default: {','.join(f'{e:g}' for e in DEFAULT_Z_BINS)}, widened to the data)")
    p.add_argument("--reference-dir", type=Path, default=None,
                   help="reference set (a directory, or a shipped set's name) whose wavegrid the example "
                        "spectra are shown on and whose LARGE_ZERR threshold is marked (default: the set the "
                        "output names in REFSET when its files are the run's, else $CSST_SLS_Z_REFDIR or the "
                        "shipped set)")
    p.add_argument("--zwarn", type=nonneg_int, default=None, metavar="N",
                   help="decode the ZWARN value N into its bits and exit")
    return p


def _edges(text):
    import argparse
    try:
        edges = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise argparse.ArgumentTypeError(f"expected at least two increasing edges, got {text!r}")
    return tuple(edges)


# ---------------------------------------------------------------- the command
def main(argv=None) -> int:
    args = parser().parse_args(argv)
    setup_logging("WARNING")
    if args.zwarn is not None:
        print(zwarn_text(args.zwarn))
        return EXIT_OK
    if args.product is None:
        print(f"{PROG}: error: give an output product to inspect, or --zwarn N", file=sys.stderr)
        return EXIT_ERROR
    try:
        fmt = check_figure_path(args.plot) if args.plot is not None else None
        if args.reference_dir is not None:
            from .reffiles.header import ReferenceFileError
            from .reffiles.sets import resolve_reference_dir
            try:
                resolve_reference_dir(args.reference_dir)
            except ReferenceFileError as exc:
                raise FigureError(" ".join(str(exc).split())) from None
        prod = read_output(args.product, args.truth)
        print(report(prod, args.z_bins))
        if args.plot is not None:
            print(f"figure: {plot(prod, args.plot, args.reference_dir, fmt)}")
    except (ProductError, FigureError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
