"""The simulation submodule: galaxies in, CSST GV/GI slitless 1D spectra out.

* :func:`simulate_arrays` gives spectra in memory (the form training streams from);
* :func:`simulate_products` writes Layout A FITS products with a TRUTH table.

Neither imports TensorFlow.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

from .families import FamilySet, as_family_set
from .instrument import load_instrument
from .population import draw_population
from .sedlib import load_sedlib
from .simulate import TRAINING_VARIATIONS, SimOptions, SimulatedSpectra, simulate_spectra

log = logging.getLogger(__name__)

CHUNK = 2000      # objects per random-number chunk of a product file


def load_models(refdir=None, overrides=None):
    """The instrument and SED library of a reference set."""
    from ..reffiles.sets import load_reference_set
    refset = load_reference_set(refdir, required=("instrument", "sedlib"), overrides=overrides)
    return load_instrument(refset.path("instrument")), load_sedlib(refset.path("sedlib")), refset


def simulate_arrays(n: int, seed: int, population: str, instrument, sedlib,
                    options: SimOptions = SimOptions(), noise: bool = True) -> SimulatedSpectra:
    """``n`` spectra in memory. The same seed gives the same arrays.

    ``sedlib``: the run's FamilySet, or a bare SED library (its default families).
    """
    rng = np.random.default_rng(seed)
    families = as_family_set(sedlib)
    pop = draw_population(n, population, rng, families)
    return simulate_spectra(pop, instrument, families, rng, options, noise=noise)


def sky_positions(objid: np.ndarray, seed: int):
    """Deterministic mock positions in a 1-degree field, so RA/DEC columns are filled."""
    rng = np.random.default_rng([seed, 7])
    return rng.uniform(150.0, 151.0, objid.size), rng.uniform(2.0, 3.0, objid.size)


def simulate_products(n: int, seed: int, population: str, per_file: int, out_dir: Path,
                      instrument, sedlib, options: SimOptions = SimOptions(), overwrite: bool = False,
                      provenance: dict | None = None, progress: bool = True) -> list:
    """Write ``n`` objects into ceil(n / per_file) Layout A products in ``out_dir``."""
    from tqdm import tqdm
    from .product import ProductWriter
    out_dir = Path(out_dir)
    families = as_family_set(sedlib)
    n_files = max(1, -(-n // per_file))
    planned = [out_dir / f"sim_{population}_s{seed}_{f:04d}.fits" for f in range(n_files)]
    existing = [p for p in planned if p.exists()]
    if existing and not overwrite:
        # Refused before any work (and before a progress bar is drawn).
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise FileExistsError(f"{existing[0]}{more} exists; refusing to overwrite it (use --overwrite)")
    paths = []
    bar = tqdm(total=n, unit="spec", desc="simulate", disable=not progress or not sys.stderr.isatty())
    for f, path in enumerate(planned):
        cards = {"OBSID": (f"SIM{seed:06d}{f:04d}", "simulated observation id"),
                 "SIMSEED": (seed, "simulation seed"), "SIMPOP": (population, "simulated population"),
                 "SIMFILE": (f, "file index within the run"),
                 "CREATOR": (f"csst_sls_z {__import__('csst_sls_z').__version__}", "software")}
        cards["SIMFAM"] = (families.spec()[:68], "SED families and weights")
        if not options.nominal():
            cards["SIMVARY"] = (True, "instrument variations on (TRUTH columns)")
        for key, value in (provenance or {}).items():
            cards[key] = value
        writer = ProductWriter(path, cards, overwrite=overwrite, truth_cards=families.header_cards())
        try:
            first = f * per_file
            last = min(n, first + per_file)
            for c, start in enumerate(range(first, last, CHUNK)):
                stop = min(last, start + CHUNK)
                rng = np.random.default_rng([seed, f, c])
                pop = draw_population(stop - start, population, rng, families)
                objid = np.arange(start + 1, stop + 1, dtype=np.int64)
                sim = simulate_spectra(pop, instrument, families, rng, options, objid=objid)
                ra, dec = sky_positions(objid, seed)
                writer.append(sim, ra, dec)
                bar.update(stop - start)
            paths.append(writer.close())
        except BaseException:
            writer.abort()
            raise
        log.info("wrote %s (%d objects)", path, last - first)
    bar.close()
    return paths
