"""``csst-sls-z regenerate``: rebuild every reference file from nothing.

    csst-sls-z regenerate --config {cpu,paper,smoke} --out DIR

Steps (each resumable: a finished step leaves a marker in DIR/work and is skipped on
rerun; the backbone checkpoints while it trains):
  data       simulate the training, validation (training population) and test
             (CSST-like n(z)) sets from fixed, recorded seeds;
  backbone   train the CNN (zbins by default; logcosh too, for the comparison curve);
  head       freeze the backbone and train the MNF head on its features;
  calibrate  fit Beta calibration and the scale factor on the validation set (weighted
             to the survey's n(z) by default), choose the ZWARN thresholds;
  evaluate   metrics for cnn, bnn, oracle and template_fit on the test set, figures;
  write      the manifest of the new set (never edits an existing one).
"""
from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .. import __version__
from ..cli import LOG_LEVELS, _Parser, setup_logging
from ..datamodel import EXIT_ERROR, EXIT_OK

log = logging.getLogger(__name__)

STEPS = ("data", "backbone", "head", "calibrate", "evaluate", "write")
FEATURE_SAMPLE = 20000      # training feature vectors kept for the out-of-distribution statistic


@dataclass(frozen=True)
class RegenConfig:
    network: str
    n_train: int
    n_val: int
    n_test: int
    backbone_budget_s: float
    logcosh_budget_s: float
    head_budget_s: float
    n_head_features: int
    n_samples: int
    n_oracle: int
    batch_size: int = 256
    eval_every_s: float = 120.0
    seed: int = 20241125
    # "survey": weight the (flat-z) validation set to the CSST-like n(z) of the test set
    # when fitting the calibration; "validation": fit it unweighted.
    calibration_target: str = "survey"
    # The galaxies and the instrument the training and validation sets are drawn with
    # (docs/simulation.md); the test set is always the nominal instrument.
    families: str = "REDROCK2016:0.2,KCORRECT:0.8"
    variations: str = "nominal"            # "nominal" or "training" (simulation.TRAINING_VARIATIONS)
    sps_library_n: int = 20000             # entries of the SPS library built for this set (if SPS is used)
    # Generalisation evaluation (evaluate_generalisation.py): per-family and shifted test sets.
    n_family_test: int = 0
    n_family_oracle: int = 0


REGEN_CONFIGS = {
    # Generalisation first: all SED families mixed in every batch, the instrument
    # variations on, 640 bins in ln(1 + z) (docs/validation.md, reference set 0004).
    "cpu": RegenConfig(network="cpu_ln", n_train=300_000, n_val=10_000, n_test=6_000, backbone_budget_s=2700,
                       logcosh_budget_s=0, head_budget_s=300, n_head_features=100_000, n_samples=200,
                       n_oracle=400, families="SPS:0.5,KCORRECT:0.3,REDROCK2016:0.2", variations="training",
                       n_family_test=2000, n_family_oracle=200),
    "paper": RegenConfig(network="paper", n_train=600_000, n_val=60_000, n_test=60_000,
                         backbone_budget_s=8 * 3600, logcosh_budget_s=8 * 3600, head_budget_s=3600,
                         n_head_features=600_000, n_samples=200, n_oracle=2000, batch_size=1024,
                         eval_every_s=900),
    "smoke": RegenConfig(network="smoke", n_train=2000, n_val=300, n_test=200, backbone_budget_s=10,
                         logcosh_budget_s=4, head_budget_s=4, n_head_features=2000, n_samples=16,
                         n_oracle=8, eval_every_s=5, families="SPS:0.5,KCORRECT:0.3,REDROCK2016:0.2",
                         variations="training", sps_library_n=200, n_family_test=60, n_family_oracle=3),
}


def _configure_tf():
    from ..tfenv import import_tensorflow
    tf = import_tensorflow()
    cores = os.cpu_count() or 2
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cores)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, cores))
    except RuntimeError:
        pass                       # already initialised in this process
    return tf


CALIBRATION_TARGETS = ("survey", "validation")


class Regeneration:
    def __init__(self, config: str, out: Path, source_refdir=None, progress=True, overrides=None,
                 reuse_network=None):
        self.name = config
        self.rc = REGEN_CONFIGS[config]
        if overrides:
            self.rc = replace(self.rc, **overrides)
        self.out = Path(out)
        self.work = self.out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        from ..simulation import load_models
        self.instrument, self.sedlib, self.source_set = load_models(source_refdir)
        self.seeds = {"train": self.rc.seed, "val": self.rc.seed + 1, "test": self.rc.seed + 2,
                      "batches": self.rc.seed + 3, "head": self.rc.seed + 4, "sampler": self.rc.seed + 5,
                      "features": self.rc.seed + 6, "sps_library": self.rc.seed + 7,
                      "generalisation": self.rc.seed + 8}
        self._pin_config()
        self.timings = self._load_json("timings.json", {})
        self.network_source = self._load_json("network_source.json", None)
        self._data = None
        self._families = None
        if reuse_network is not None and not self.done("head"):
            self._adopt_network(Path(reuse_network))

    def config_record(self) -> dict:
        """The configuration as the manifest records it (JSON types: lists, not tuples)."""
        return json.loads(json.dumps(self.rc.__dict__))

    def _pin_config(self):
        """A resumed run must use the configuration it started with (recorded in work/config.json)."""
        started = self._load_json("config.json", None)
        now = self.config_record()
        if started is None:
            self._save_json("config.json", now)
        elif started != now:
            changed = sorted(k for k in set(started) | set(now) if started.get(k) != now.get(k))
            raise ValueError(f"{self.out} was started with another configuration ({', '.join(changed)} differ: "
                             f"{ {k: started.get(k) for k in changed} }); resume it with the same options "
                             "or choose a new --out")

    def _adopt_network(self, refdir: Path):
        """Take the trained backbone and head of an existing, verified set; later steps rerun.

        The data step still runs (the calibration, the thresholds and the evaluation need
        the same simulated sets), so the new set must use the same configuration and seeds.
        """
        from ..reference import load_reference_set
        from ..network.weights import read_config
        refset = load_reference_set(refdir)
        manifest = json.loads((refdir / "manifest.json").read_text())
        prov = manifest.get("provenance", {})
        source_config = {k: v for k, v in prov.get("config", {}).items() if k != "calibration_target"}
        mine = {k: v for k, v in self.config_record().items() if k != "calibration_target"}
        if source_config != mine:
            changed = sorted(k for k in set(source_config) | set(mine) if source_config.get(k) != mine.get(k))
            raise ValueError(f"{refdir} was not trained with --config {self.name} as it stands ({', '.join(changed)} "
                             "differ); its network cannot be reused here")
        for reftype in ("backbone", "bnnhead"):
            src = refset.path(reftype)
            if src.parent.resolve() != Path(refdir).resolve():
                raise ValueError(f"{reftype} of {refdir} is overridden by {src}; unset the override to reuse the set")
            shutil.copy2(src, self.work / f"{reftype}.fits")
        for stale in ("train_features_sample.npy", "pred_val.npz", "pred_test.npz"):
            (self.work / stale).unlink(missing_ok=True)
        if read_config(self.work / "backbone.fits", "backbone").name != self.rc.network:
            raise ValueError(f"{refdir}'s backbone is not the {self.rc.network} network")
        # The training curves belong to the network: carry them into the new evaluation.
        evaluation = refdir / "evaluation.json"
        if evaluation.exists():
            self._save_json("backbone_histories.json",
                            json.loads(evaluation.read_text()).get("backbone_histories", {}))
        self.network_source = {"set": refset.manifest_id, "path": str(refdir),
                               "training_data_sha256": prov.get("training_data_sha256", {}),
                               "step_wall_s": {k: v for k, v in prov.get("step_wall_s", {}).items()
                                               if k in ("backbone", "head")}}
        self._save_json("network_source.json", self.network_source)
        for step in ("backbone", "head"):
            self.mark(step, 0.0)
        log.info("reusing the backbone and MNF head of %s; steps from calibrate on rerun",
                 refset.manifest_id)

    # ------------------------------------------------------------ helpers
    def _load_json(self, name, default):
        p = self.work / name
        return json.loads(p.read_text()) if p.exists() else default

    def _save_json(self, name, obj):
        p = self.work / name
        p.write_text(json.dumps(obj, indent=1, default=float))

    def done(self, step):
        return (self.work / f"{step}.done").exists()

    def mark(self, step, seconds):
        self.timings[step] = seconds
        self._save_json("timings.json", self.timings)
        (self.work / f"{step}.done").write_text(f"{seconds:.1f}\n")
        log.info("step %s finished in %.1f s", step, seconds)

    @property
    def cfg(self):
        from ..network.config import CONFIGS
        from ..refdata import grid_from_instrument
        return replace(CONFIGS[self.rc.network], input_length=grid_from_instrument(self.instrument).length)

    def families(self, only=None):
        """The SED families of this set (``only``: one family of them, for per-family tests).

        The SPS library is built once, from its recorded seed, into work/sps_library.fits;
        its sha256 goes into the manifest. It is not shipped: the stage never needs it.
        """
        from ..simulation.families import FamilySet, parse_families
        names = parse_families(self.rc.families)
        if only is not None and only in names:
            return self.families().only(only)
        wanted = names if only is None else {only: None}
        options = {}
        if "SPS" in wanted:
            # One library per seed: a family tested outside the run's mixture (leave-one-out)
            # is drawn from the same recorded library, never from a default one.
            path = self.work / "sps_library.fits"
            if not path.exists():
                from ..simulation.sps_library import build_sps_library, write_sps_library
                log.info("building the SPS library: %d entries, seed %d", self.rc.sps_library_n, self.seeds["sps_library"])
                write_sps_library(build_sps_library(self.rc.sps_library_n, self.seeds["sps_library"],
                                                    progress=self.progress), path)
            options["sps_library"] = path
        if only is not None:
            return FamilySet(self.sedlib, wanted, **options)
        if self._families is None:
            self._families = FamilySet(self.sedlib, names, **options)
        return self._families

    def sim_options(self, variations=None):
        from ..simulation import TRAINING_VARIATIONS, SimOptions
        kind = self.rc.variations if variations is None else variations
        if kind not in ("nominal", "training"):
            raise ValueError(f"variations must be 'nominal' or 'training', not {kind!r}")
        return TRAINING_VARIATIONS if kind == "training" else SimOptions()

    def data(self):
        """Simulated sets, each made when first used; deterministic from the seeds, so a rerun
        (a resumed regeneration) rebuilds exactly the sets its remaining steps need."""
        if self._data is None:
            self._data = _LazySets(self._simulate_set)
        return self._data

    def _simulate_set(self, name):
        from ..simulation import simulate_arrays
        from .data import from_simulation
        sizes = {"train": (self.rc.n_train, "train"), "val": (self.rc.n_val, "train"), "test": (self.rc.n_test, "test")}
        n, pop = sizes[name]
        t0 = time.time()
        chunks = []
        options = self.sim_options("nominal" if name == "test" else None)
        for c, start in enumerate(range(0, n, 20000)):
            sim = simulate_arrays(min(20000, n - start), self.seeds[name] * 1000 + c, pop,
                                  self.instrument, self.families(), options)
            chunks.append((sim, from_simulation(sim, self.instrument)))
        log.info("simulated %s: %d objects in %.0f s", name, n, time.time() - t0)
        return _concat_sets([c[1] for c in chunks]), _concat_truth([c[0] for c in chunks])

    # ------------------------------------------------------------ steps
    def step_data(self):
        d = self.data()
        summary = {k: {"n": len(d[k]), "sha256_sample": d[k].digest()} for k in ("train", "val", "test")}
        summary["families"] = self.families().provenance()
        expected = (self.network_source or {}).get("training_data_sha256") or {}
        differ = sorted(k for k, v in expected.items() if k in summary and isinstance(summary[k], dict)
                        and summary[k].get("sha256_sample") != v)
        if differ:
            raise ValueError(f"the simulated {', '.join(differ)} set(s) differ from those the reused network was "
                             f"made with ({self.network_source['set']}): the simulator or its reference files "
                             "changed since; retrain instead of reusing the network")
        self._save_json("data.json", summary)

    def _fixed(self, name, seed_key):
        from .data import BatchMaker
        maker = BatchMaker(self.data()[name], seed=self.seeds[seed_key] + 17)
        return maker.fixed()

    def step_backbone(self):
        from ..network.weights import save_weights
        from .data import BatchMaker
        from .train_backbone import train_backbone
        x_val, z_val = self._fixed("val", "val")
        results = {}
        for objective, budget in (("zbins", self.rc.backbone_budget_s), ("logcosh", self.rc.logcosh_budget_s)):
            if budget <= 0:
                continue
            cfg = replace(self.cfg, objective=objective)
            maker = BatchMaker(self.data()["train"], seed=self.seeds["batches"])
            model, history = train_backbone(cfg, maker.stream(self.rc.batch_size), x_val, z_val, budget,
                                            self.work / f"backbone_{objective}", batch_size=self.rc.batch_size,
                                            eval_every_s=self.rc.eval_every_s, progress=self.progress)
            results[objective] = history
            if objective == "zbins":
                save_weights(model, self.work / "backbone.fits", "backbone", cfg, "SIMULATION",
                             "CNN backbone, trained on simulated CSST spectra", overwrite=True,
                             history=[f"regenerate --config {self.name}: {len(history)} evaluations, "
                                      f"budget {budget:.0f} s, objective {objective}"])
        self._save_json("backbone_histories.json", results)

    def _load_backbone(self):
        from ..network.backbone import build_backbone
        from ..network.weights import load_weights, read_config
        cfg = read_config(self.work / "backbone.fits", "backbone")
        model = build_backbone(cfg)
        load_weights(model, self.work / "backbone.fits", "backbone")
        return model, cfg

    def step_head(self):
        from ..network.weights import save_weights
        from .train_head import train_head
        backbone, cfg = self._load_backbone()
        train = self.data()["train"]
        n = min(self.rc.n_head_features, len(train))
        feats, zc, zt = self._frozen_features(backbone, cfg, n)
        head = train_head(cfg, feats, zc, zt, self.rc.head_budget_s, seed=self.seeds["head"], progress=self.progress)
        save_weights(head, self.work / "bnnhead.fits", "bnnhead", cfg, "SIMULATION",
                     "MNF Bayesian head on the frozen backbone", overwrite=True,
                     history=[f"regenerate --config {self.name}: {n} feature vectors, budget {self.rc.head_budget_s:.0f} s"])
        np.save(self.work / "train_features_sample.npy", feats[:FEATURE_SAMPLE])

    def _frozen_features(self, backbone, cfg, n):
        """Backbone features of the first n training objects for one fixed set of noise draws.

        Computed once and reused by the head; deterministic from the "features" seed, so the
        thresholds' feature sample can be rebuilt when the network was adopted.
        """
        from .data import BatchMaker
        from .train_head import extract_features
        maker = BatchMaker(self.data()["train"], seed=self.seeds["features"])
        feats, zc, zt = [], [], []
        for start in range(0, n, 10000):
            idx = np.arange(start, min(n, start + 10000))
            x, z = maker.batch(idx)
            f, c = extract_features(backbone, cfg, x)
            feats.append(f), zc.append(c), zt.append(z)
        return np.concatenate(feats), np.concatenate(zc), np.concatenate(zt).astype(np.float32)

    def _train_feature_sample(self):
        path = self.work / "train_features_sample.npy"
        if not path.exists():
            backbone, cfg = self._load_backbone()
            # The first FEATURE_SAMPLE of the features step_head computed (same chunks, same draws).
            n = min(FEATURE_SAMPLE, self.rc.n_head_features, len(self.data()["train"]))
            feats, _, _ = self._frozen_features(backbone, cfg, n)
            np.save(path, feats)
        return np.load(path)

    def calibration_weights(self, z_true):
        """Per-object weights that carry the validation set (training population) to the target."""
        from ..simulation.population import redshift_pdf
        if self.rc.calibration_target == "validation":
            return None
        if self.rc.calibration_target != "survey":
            raise ValueError(f"calibration_target must be one of {CALIBRATION_TARGETS}")
        return redshift_pdf(z_true, "test") / redshift_pdf(z_true, "train", self.cfg.z_max)

    def sampler(self, n_samples=None):
        from ..network.head import BNNHead
        from ..network.sampler import Sampler
        from ..network.weights import load_weights
        import tensorflow as tf
        backbone, cfg = self._load_backbone()
        head = BNNHead(cfg)
        head(tf.zeros((2, backbone.output["features"].shape[-1])), tf.zeros((2,)))
        load_weights(head, self.work / "bnnhead.fits", "bnnhead")
        return Sampler(backbone, head, cfg, n_samples=n_samples or self.rc.n_samples, seed=self.seeds["sampler"]), cfg

    def predict_set(self, name):
        cache = self.work / f"pred_{name}.npz"
        if cache.exists():
            with np.load(cache) as d:
                return {k: d[k] for k in d.files}
        sampler, cfg = self.sampler()
        x, z = self._fixed(name, name)
        pred = sampler.predict(x)
        feats = []
        import tensorflow as tf
        for s in range(0, x.shape[0], 512):
            feats.append(sampler.backbone(tf.convert_to_tensor(x[s:s + 512]), training=False)["features"].numpy())
        out = {"z_true": z, "z_cnn": pred.z_cnn, "mean": pred.mean, "sigma": pred.sigma,
               "aleatoric": pred.aleatoric, "epistemic": pred.epistemic, "features": np.concatenate(feats),
               "snr_gi": self.data()[name].snr_gi}
        np.savez(cache, **out)
        return out

    def step_calibrate(self):
        from ..calibration import calibrated_summary, effective_sample_size, fit_beta, fit_scale
        from ..refdata import Thresholds, write_calibration, write_thresholds
        from .metrics import outlier_fraction
        p = self.predict_set("val")
        weights = self.calibration_weights(p["z_true"])
        beta = fit_beta(p["mean"], p["sigma"], p["z_true"], weights=weights)
        scale = fit_scale(p["mean"], p["sigma"], p["z_true"], weights=weights)
        how = ("unweighted" if weights is None else
               f"weighted to the CSST-like n(z) of the test population "
               f"(effective size {effective_sample_size(weights):.0f})")
        write_calibration(self.work / "calibration.fits", beta, scale, "SIMULATION", overwrite=True,
                          history=[f"Fitted on {p['z_true'].size} validation spectra (seed {self.seeds['val']}), {how}."])
        log.info("calibration fitted %s", how)
        summ = calibrated_summary(beta, p["mean"], p["sigma"])
        z, zt = summ["Z"], p["z_true"]
        rel_err = summ["ZERR"] / (1 + z)
        # LOW_SNR: the largest SNR_GI below which a quarter of validation objects are outliers.
        low_snr = float(np.percentile(p["snr_gi"], 5))
        for s in np.percentile(p["snr_gi"], np.arange(50, 0, -1)):
            sel = p["snr_gi"] < s
            if sel.sum() >= 20 and outlier_fraction(z[sel], zt[sel]) >= 0.25:
                low_snr = float(s)
                break
        # LARGE_ZERR: the smallest ZERR/(1+Z) above which half the validation objects are outliers.
        large = float(np.percentile(rel_err, 99))
        for t in np.percentile(rel_err, np.arange(50, 100, 0.5)):
            sel = rel_err > t
            if sel.sum() >= 20 and outlier_fraction(z[sel], zt[sel]) >= 0.5:
                large = float(t)
                break
        feats = self._train_feature_sample().astype(np.float64)
        cov = np.cov(feats, rowvar=False) + 1e-6 * np.eye(feats.shape[1])
        th = Thresholds(low_snr=low_snr, large_zerr=large, ood_max=0.0, ood_mean=feats.mean(axis=0),
                        ood_precision=np.linalg.inv(cov), z_min=self.cfg.z_min, z_max=self.cfg.z_max)
        # OUT_OF_DISTRIBUTION: beyond the 99.9th percentile of validation feature distances.
        ood_max = float(np.percentile(th.ood_distance(p["features"].astype(np.float64)), 99.9))
        th = replace(th, ood_max=ood_max)
        why = [f"LOW_SNR {low_snr:.3f}: largest SNR_GI below which >= 25% of validation objects are outliers.",
               f"LARGE_ZERR {large:.5f}: smallest ZERR/(1+Z) above which >= 50% of validation objects are outliers.",
               f"OOD {ood_max:.3f}: 99.9th percentile of validation feature Mahalanobis distance (per dim)."]
        write_thresholds(self.work / "thresholds.fits", th, "SIMULATION", history=why, overwrite=True)
        self._save_json("thresholds_why.json", why)
        log.info("thresholds: %s", " ".join(why))

    def step_evaluate(self):
        from .evaluate import evaluate
        evaluation = evaluate(self)
        (self.out / "evaluation.json").write_text(json.dumps(evaluation, indent=1, default=float))

    def step_write(self):
        from ..tfenv import import_tensorflow
        tf = import_tensorflow()
        from ..reference import write_manifest
        from ..refdata import grid_from_instrument, write_wavegrid
        files = {}
        for reftype in ("backbone", "bnnhead", "calibration", "thresholds"):
            shutil.copy2(self.work / f"{reftype}.fits", self.out / f"{reftype}.fits")
            files[reftype] = f"{reftype}.fits"
        for reftype in ("instrument", "sedlib"):
            src = self.source_set.path(reftype)
            shutil.copy2(src, self.out / src.name)
            files[reftype] = src.name
        write_wavegrid(self.out / "wavegrid.fits", grid_from_instrument(self.instrument), "SIMULATION", overwrite=True)
        files["wavegrid"] = "wavegrid.fits"
        data = self._load_json("data.json", {})
        provenance = {
            "command": f"csst-sls-z regenerate --config {self.name} --out {self.out}",
            "config": self.rc.__dict__, "network": self.cfg.to_dict(), "objective": self.cfg.objective,
            "seeds": self.seeds,
            "training_data_sha256": {k: v["sha256_sample"] for k, v in data.items() if "sha256_sample" in v},
            "sed_families": data.get("families", {}), "variations": self.rc.variations,
            "source_reference_set": self.source_set.manifest_id, "code_version": __version__,
            "tensorflow": tf.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "machine": f"{platform.machine()} {os.cpu_count()} cores", "step_wall_s": self.timings,
        }
        if self.network_source:
            provenance["network_from"] = self.network_source
            provenance["command"] += f" --reuse-network {self.network_source['path']}"
        if self.rc.calibration_target != RegenConfig.calibration_target:
            provenance["command"] += f" --calibration-target {self.rc.calibration_target}"
        write_manifest(self.out, files, "SIMULATION", provenance=provenance)

    def run(self, until=None):
        for step in STEPS:
            if self.done(step):
                log.info("step %s already done; skipping", step)
            else:
                if step in ("backbone", "head", "calibrate", "evaluate"):
                    _configure_tf()
                t0 = time.time()
                log.info("step %s starting", step)
                getattr(self, f"step_{step}")()
                self.mark(step, time.time() - t0)
            if until and step == until:
                break


class _LazySets(dict):
    """{"train", "val", "test"} -> TrainingSet and "<name>_truth" -> Population, simulated on first access."""

    def __init__(self, make):
        super().__init__()
        self._make = make

    def __missing__(self, key):
        name = key[:-len("_truth")] if key.endswith("_truth") else key
        data, truth = self._make(name)
        self[name], self[name + "_truth"] = data, truth
        return self[key]


def _concat_sets(parts):
    from .data import TrainingSet
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


def _concat_truth(sims):
    """Truth needed by the oracle: the population of every object, concatenated."""
    from ..simulation.population import Population
    pops = [s.population for s in sims]
    return Population(**{k: np.concatenate([getattr(p, k) for p in pops]) for k in pops[0].__dict__})


def parser():
    p = _Parser(prog="csst-sls-z regenerate", description="Rebuild a complete reference set from nothing: "
                "simulate, train the backbone and the MNF head, calibrate, evaluate (docs/regeneration.md).")
    p.add_argument("--config", choices=sorted(REGEN_CONFIGS), required=True,
                   help="cpu: trains on 2 cores in about an hour; paper: the published architecture and data "
                        "volume; smoke: seconds, for tests")
    p.add_argument("--out", type=Path, required=True, help="directory of the new reference set (resumes if it exists)")
    p.add_argument("--source-reference-dir", type=Path, default=None,
                   help="reference set providing the instrument and sedlib files (default: the shipped set)")
    p.add_argument("--until", choices=STEPS, default=None, help="stop after this step (resume later)")
    p.add_argument("--reuse-network", type=Path, default=None, metavar="SET",
                   help="take the trained backbone and MNF head of this reference set (made with the same "
                        "--config) and rerun only data, calibrate, evaluate and write")
    p.add_argument("--calibration-target", choices=CALIBRATION_TARGETS, default=None,
                   help="survey (default): fit the calibration on the validation set weighted to the CSST-like "
                        "n(z); validation: unweighted")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="INFO", help="default: INFO")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.log_level)
    from ..reffile import ReferenceFileError
    if (args.out / "manifest.json").exists():
        print(f"csst-sls-z regenerate: error: {args.out} already holds a finished reference set; "
              "sets are never edited in place, choose a new --out", file=sys.stderr)
        return EXIT_ERROR
    try:
        overrides = {"calibration_target": args.calibration_target} if args.calibration_target else None
        regen = Regeneration(args.config, args.out, args.source_reference_dir, progress=not args.no_progress,
                             overrides=overrides, reuse_network=args.reuse_network)
        regen.run(until=args.until)
    except (ReferenceFileError, OSError, ValueError) as exc:
        print(f"csst-sls-z regenerate: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
