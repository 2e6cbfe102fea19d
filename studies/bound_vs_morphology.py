"""How much of the information bound does self-broadening cost? The oracle on the same
galaxies simulated with their real shapes and as point sources.

    python studies/bound_vs_morphology.py --n 60 --seed 7
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))



def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=60)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    from csst_sls_z.simulation import load_models
    from csst_sls_z.simulation.population import draw_population
    from csst_sls_z.simulation.simulate import simulate_spectra
    from csst_sls_z.training.baselines import oracle_redshifts
    from csst_sls_z.training.metrics import outlier_fraction, sigma_nmad
    instrument, sedlib, _ = load_models()
    pop = draw_population(args.n, "test", np.random.default_rng(args.seed), sedlib)
    point = dataclasses.replace(pop, r_eff=np.full(args.n, 0.01))
    print("| shapes | sigma_NMAD | eta | n |\n|---|---|---|---|")
    for label, population in (("real (Sersic, r_eff, b/a, PA)", pop), ("point sources", point)):
        sim = simulate_spectra(population, instrument, sedlib, np.random.default_rng(args.seed + 1))
        flux = np.concatenate([sim.bands["GV"].flux, sim.bands["GI"].flux], axis=1).astype(float)
        err = np.concatenate([sim.bands["GV"].err, sim.bands["GI"].err], axis=1).astype(float)
        z = oracle_redshifts(population, flux, err, instrument, sedlib, 1.6, progress=False)
        print(f"| {label} | {sigma_nmad(z, pop.z):.5f} | {100 * outlier_fraction(z, pop.z):.1f}% | {args.n} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
