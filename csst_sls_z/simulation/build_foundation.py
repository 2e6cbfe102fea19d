"""Build the foundation reference set (instrument + sedlib) from the public sources.

    python -m csst_sls_z.simulation.build_foundation --instrument-dir DIR --redrock FILE --out DIR

DIR holds the CESS tables {GU,GV,GI}.Throughput.1st.fits and bkg_spec.fits (Wen et al.
2024); FILE is DESI's rrtemplate-galaxy-2016.fits. The kcorrect part comes from the
kcorrect package itself.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..reffiles.sets import write_manifest
from .instrument import build_instrument_file
from .sedlib import build_sedlib_file

log = logging.getLogger(__name__)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m csst_sls_z.simulation.build_foundation", allow_abbrev=False,
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--instrument-dir", type=Path, required=True)
    parser.add_argument("--redrock", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=False)
    build_instrument_file(args.instrument_dir, args.out / "instrument_0001.fits")
    build_sedlib_file(args.redrock, args.out / "sedlib_0001.fits")
    write_manifest(args.out, {"instrument": "instrument_0001.fits", "sedlib": "sedlib_0001.fits"},
                   "SIMULATION", provenance={"built_by": "csst_sls_z.simulation.build_foundation"})
    log.info("foundation set written to %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
