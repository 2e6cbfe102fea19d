"""The ``csst-sls-z`` command: a dispatcher to simulate, run, regenerate, batch, inspect.

Each subcommand lives in its own module as ``main(argv=None) -> int``, with exit 0 for
success, 1 for an error and 3 (``datamodel.EXIT_NOTHING_TO_DO``) when there is nothing to
do; errors are one sentence on stderr, never a traceback. Their shared plumbing (parser,
logging, validators, the SIGTERM guard, the stage's generated options) is
``csst_sls_z.commands``. A subcommand's module is imported only when it is chosen, and
TensorFlow only once a network runs, so ``--help`` is quick.
"""
from __future__ import annotations

import importlib
import sys

from . import __version__
from .datamodel import EXIT_ERROR, EXIT_OK

# ---------------------------------------------------------------- dispatch
COMMANDS = {
    "simulate": ("simulate CSST slitless spectra products", "csst_sls_z.simulation.simulate_cli:main"),
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
    try:
        return getattr(importlib.import_module(module), func)(argv[1:])
    except SystemExit as exc:          # argparse's --help and usage errors: a code, not an exception
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
