"""Step ``data``: the simulated training, validation and test sets.

Each set is simulated when first used (``LazySets``), deterministically from its recorded
seed, so a resumed run rebuilds exactly the sets its remaining steps need. The step itself
records each set's size and hash (and the SED families) in work/data.json, and refuses a
reused network whose training data no longer match.
"""
from __future__ import annotations

import logging
import time

import numpy as np

log = logging.getLogger(__name__)

CHUNK = 20000                 # objects simulated per call (each chunk its own seed)
POPULATIONS = {"train": "train", "val": "train", "test": "test"}    # set -> population it is drawn from


def run(regen):
    d = regen.data()
    summary = {k: {"n": len(d[k]), "sha256_sample": d[k].digest()} for k in ("train", "val", "test")}
    summary["families"] = regen.families().provenance()
    expected = (regen.network_source or {}).get("training_data_sha256") or {}
    differ = sorted(k for k, v in expected.items() if k in summary and isinstance(summary[k], dict)
                    and summary[k].get("sha256_sample") != v)
    if differ:
        raise ValueError(f"the simulated {', '.join(differ)} set(s) differ from those the reused network was "
                         f"made with ({regen.network_source['set']}): the simulator or its reference files "
                         "changed since; retrain instead of reusing the network")
    regen.save_json("data.json", summary)


def simulate_set(regen, name):
    """(TrainingSet, Population) of set ``name`` ("train", "val" or "test")."""
    from ..data import from_simulation
    from ...simulation import simulate_arrays
    n = {"train": regen.rc.n_train, "val": regen.rc.n_val, "test": regen.rc.n_test}[name]
    t0 = time.time()
    chunks = []
    options = regen.sim_options("nominal" if name == "test" else None)
    for c, start in enumerate(range(0, n, CHUNK)):
        sim = simulate_arrays(min(CHUNK, n - start), regen.seeds[name] * 1000 + c, POPULATIONS[name],
                              regen.instrument, regen.families(), options)
        chunks.append((sim, from_simulation(sim, regen.instrument)))
    log.info("simulated %s: %d objects in %.0f s", name, n, time.time() - t0)
    return concat_sets([c[1] for c in chunks]), concat_truth([c[0] for c in chunks])


def fixed(regen, name, seed_key=None, native: bool = False):
    """One fixed noisy realisation (x, z) of set ``name``, from the seed of ``seed_key`` (default: the
    set's), on the network's grid, or with ``native`` the same noise on the instrument's pixels."""
    from ..data import BatchMaker
    seed = regen.seeds[seed_key or name] + 17
    maker = BatchMaker(regen.data()[name], seed=seed) if native else regen.batch_maker(name, seed)
    return maker.fixed()


def fixed_snr_gi(regen, name, seed_key=None):
    """The GI SNR of :func:`fixed`'s realisation as the stage measures it (SNR_GI: the mean of
    max(FLUX, 0) / ERR over the valid native pixels): the same seed draws the same noise."""
    from ..data import BatchMaker
    from ...simulation.simulate import band_snr
    data = regen.data()[name]
    flux, err = BatchMaker(data, seed=regen.seeds[seed_key or name] + 17).noisy(np.arange(len(data)))
    gi = data.band_slices[1]
    return band_snr(flux[:, gi], err[:, gi])


class LazySets(dict):
    """{"train", "val", "test"} -> TrainingSet and "<name>_truth" -> Population, simulated on first access."""

    def __init__(self, make):
        super().__init__()
        self._make = make

    def __missing__(self, key):
        name = key[:-len("_truth")] if key.endswith("_truth") else key
        data, truth = self._make(name)
        self[name], self[name + "_truth"] = data, truth
        return self[key]


def concat_sets(parts):
    from ..data import TrainingSet
    if len(parts) == 1:
        return parts[0]
    return TrainingSet(z=np.concatenate([p.z for p in parts]), model=np.concatenate([p.model for p in parts]),
                       conv=parts[0].conv, background=np.concatenate([p.background for p in parts]),
                       readvar=np.concatenate([p.readvar for p in parts]), band_slices=parts[0].band_slices,
                       noisy_flux=np.concatenate([p.noisy_flux for p in parts]),
                       noisy_err=np.concatenate([p.noisy_err for p in parts]),
                       snr_gi=np.concatenate([p.snr_gi for p in parts]),
                       err_scale=np.concatenate([p.err_scale for p in parts]),
                       flux_tilt=np.concatenate([p.flux_tilt for p in parts]), tilt_shape=parts[0].tilt_shape)


def concat_truth(sims):
    """Truth needed by the oracle: the population of every object, concatenated."""
    from ...simulation.population import Population
    pops = [s.population for s in sims]
    return Population(**{k: np.concatenate([getattr(p, k) for p in pops]) for k in pops[0].__dict__})
