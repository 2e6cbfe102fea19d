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

Each step is a function in its own module of ``training/steps/``; this module holds the
configurations, the driver (``Regeneration``: the work directory, resumption markers, the
pinned configuration, seeds, the simulated sets and the SED families) and the command.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..commands import LOG_LEVELS, Parser as _Parser, positive_int, setup_logging, show_progress
from ..datamodel import EXIT_ERROR, EXIT_OK
from .steps import STEPS as _STEP_FUNCTIONS, TF_STEPS
from .steps.calibrate import CALIBRATION_TARGETS

log = logging.getLogger(__name__)

STEPS = tuple(_STEP_FUNCTIONS)
# Seed of each random stream, as an offset from the configuration's seed (recorded in the manifest).
SEED_OFFSETS = {"train": 0, "val": 1, "test": 2, "batches": 3, "head": 4, "sampler": 5, "features": 6,
                "sps_library": 7, "generalisation": 8}


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
    # The network's input grid joins this many pixels of the instrument's grid (1: the native
    # pixels; 2: about two pixels per resolution element of R ~ 250 in GI): the set's wavegrid.
    grid_rebin: int = 1


REGEN_CONFIGS = {
    # Generalisation first: all SED families mixed in every batch, the instrument
    # variations on, 640 bins in ln(1 + z) (docs/validation.md, reference set 0004).
    "cpu": RegenConfig(network="cpu_ln", n_train=300_000, n_val=10_000, n_test=6_000, backbone_budget_s=2700,
                       logcosh_budget_s=0, head_budget_s=300, n_head_features=100_000, n_samples=200,
                       n_oracle=400, families="SPS:0.5,KCORRECT:0.3,REDROCK2016:0.2", variations="training",
                       n_family_test=2000, n_family_oracle=200),
    # The learning-curve study's winner (docs/training.md): the cpu recipe on a grid two times
    # coarser (456 input pixels, half the FLOPs), trained for two hours.
    "cpu_coarse": RegenConfig(network="cpu_ln", n_train=300_000, n_val=10_000, n_test=6_000,
                              backbone_budget_s=7200, logcosh_budget_s=0, head_budget_s=300,
                              n_head_features=100_000, n_samples=200, n_oracle=400,
                              families="SPS:0.5,KCORRECT:0.3,REDROCK2016:0.2", variations="training",
                              n_family_test=2000, n_family_oracle=200, grid_rebin=2),
    "paper": RegenConfig(network="paper", n_train=600_000, n_val=60_000, n_test=60_000,
                         backbone_budget_s=8 * 3600, logcosh_budget_s=8 * 3600, head_budget_s=3600,
                         n_head_features=600_000, n_samples=200, n_oracle=2000, batch_size=1024,
                         eval_every_s=900),
    "smoke": RegenConfig(network="smoke", n_train=2000, n_val=300, n_test=200, backbone_budget_s=10,
                         logcosh_budget_s=4, head_budget_s=4, n_head_features=2000, n_samples=16,
                         n_oracle=8, eval_every_s=5, families="SPS:0.5,KCORRECT:0.3,REDROCK2016:0.2",
                         variations="training", sps_library_n=200, n_family_test=60, n_family_oracle=3),
}


def configure_tf():
    """TensorFlow with its thread pools sized to this machine (before the first TF step)."""
    from ..tfenv import import_tensorflow
    tf = import_tensorflow()
    cores = os.cpu_count() or 2
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cores)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, cores))
    except RuntimeError:
        pass                       # already initialised in this process
    return tf




class Regeneration:
    """The driver: owns the work directory and resumption; each step is ``steps.<name>.run(self)``.

    Public to the steps and to the evaluations and benchmarks built on a regeneration:
    ``name``, ``rc`` (the RegenConfig), ``out``, ``work``, ``progress``, ``instrument``,
    ``sedlib``, ``source_set``, ``seeds``, ``timings``, ``network_source``, ``cfg``, ``grid``,
    ``native_grid``, ``batch_maker()``,
    ``families()``, ``sim_options()``, ``data()``, ``load_backbone()``, ``sampler()``,
    ``predict_set()``, ``calibration_weights()``, ``load_json()`` / ``save_json()``,
    ``done()`` / ``mark()`` and ``run(until=...)``.
    """

    def __init__(self, config: str, out: Path, source_refdir=None, progress=True, overrides=None,
                 reuse_network=None, command: str | None = None):
        self.name = config
        # The command as given, every option, recorded in the set's provenance (steps/write.py).
        self.command = command
        self.rc = REGEN_CONFIGS[config]
        if overrides:
            self.rc = replace(self.rc, **overrides)
        self.out = Path(out)
        self.work = self.out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        from ..simulation import load_models
        self.instrument, self.sedlib, self.source_set = load_models(source_refdir)
        self.seeds = {k: self.rc.seed + v for k, v in SEED_OFFSETS.items()}
        self._pin_config()
        self.timings = self.load_json("timings.json", {})
        self.network_source = self.load_json("network_source.json", None)
        self._data = None
        self._families = None
        if reuse_network is not None and not self.done("head"):
            from .steps.reuse import adopt_network
            adopt_network(self, Path(reuse_network))

    def config_record(self) -> dict:
        """The configuration as the manifest records it (JSON types: lists, not tuples)."""
        return json.loads(json.dumps(self.rc.__dict__))

    def _pin_config(self):
        """A resumed run must use the configuration it started with (recorded in work/config.json)."""
        started = self.load_json("config.json", None)
        now = self.config_record()
        if started is None:
            self.save_json("config.json", now)
        elif started != now:
            changed = sorted(k for k in set(started) | set(now) if started.get(k) != now.get(k))
            raise ValueError(f"{self.out} was started with another configuration ({', '.join(changed)} differ: "
                             f"{ {k: started.get(k) for k in changed} }); resume it with the same options "
                             "or choose a new --out")

    # ------------------------------------------------------------ the work directory
    def load_json(self, name, default):
        p = self.work / name
        return json.loads(p.read_text()) if p.exists() else default

    def save_json(self, name, obj):
        p = self.work / name
        p.write_text(json.dumps(obj, indent=1, default=float))

    def done(self, step):
        return (self.work / f"{step}.done").exists()

    def mark(self, step, seconds):
        self.timings[step] = seconds
        self.save_json("timings.json", self.timings)
        (self.work / f"{step}.done").write_text(f"{seconds:.1f}\n")
        log.info("step %s finished in %.1f s", step, seconds)

    # ------------------------------------------------------------ what the steps share
    @property
    def native_grid(self):
        """The instrument's pixel grid: the grid the simulated sets are kept on."""
        from ..reffiles.tables import grid_from_instrument
        return grid_from_instrument(self.instrument)

    @property
    def grid(self):
        """The network's input grid (the set's wavegrid): the native grid coarsened by ``grid_rebin``."""
        return self.native_grid.coarsened(self.rc.grid_rebin)

    @property
    def cfg(self):
        """The network configuration, its input length that of the set's grid."""
        from ..network.config import CONFIGS
        return replace(CONFIGS[self.rc.network], input_length=self.grid.length)

    def batch_maker(self, name: str, seed: int):
        """Noisy network inputs of simulated set ``name`` on the set's grid (``data.BatchMaker``)."""
        from .data import BatchMaker
        return BatchMaker(self.data()[name], seed=seed, grid_rebin=self.rc.grid_rebin)

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
            from .steps.data import LazySets, simulate_set
            self._data = LazySets(lambda name: simulate_set(self, name))
        return self._data

    def load_backbone(self):
        """(backbone, cfg) from work/backbone.fits."""
        from ..network.loader import build_network
        net = build_network(backbone_file=self.work / "backbone.fits", head=False)
        return net.backbone, net.cfg

    def sampler(self, n_samples=None):
        """(Sampler, cfg) on work/backbone.fits and work/bnnhead.fits, checked like a set's."""
        from ..network.loader import sampler_from_files
        return sampler_from_files(self.work / "backbone.fits", self.work / "bnnhead.fits",
                                  n_samples or self.rc.n_samples, self.seeds["sampler"])

    def predict_set(self, name):
        from .steps.predict import predict_set
        return predict_set(self, name)

    def calibration_weights(self, z_true):
        from .steps.calibrate import calibration_weights
        return calibration_weights(self, z_true)

    # ------------------------------------------------------------ resumption
    def run(self, until=None):
        for step, function in _STEP_FUNCTIONS.items():
            if self.done(step):
                log.info("step %s already done; skipping", step)
            else:
                if step in TF_STEPS:
                    configure_tf()
                t0 = time.time()
                log.info("step %s starting", step)
                function(self)
                self.mark(step, time.time() - t0)
            if until and step == until:
                break


def parser():
    p = _Parser(prog="csst-sls-z regenerate", description="Rebuild a complete reference set from nothing: "
                "simulate, train the backbone and the MNF head, calibrate, evaluate (docs/regeneration.md).")
    p.add_argument("--config", choices=sorted(REGEN_CONFIGS), required=True,
                   help="cpu: trains on 2 cores in about an hour; cpu_coarse: the cpu recipe on a grid two times coarser, "
                        "trained for two hours; paper: the published architecture and data "
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
    p.add_argument("--backbone-budget-s", type=positive_int, default=None, metavar="SECONDS",
                   help="wall-clock budget of the backbone training (default: the config's; cpu: 2700); "
                        "recorded in the set's provenance command")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="INFO", help="default: INFO")
    return p


def main(argv=None) -> int:
    import shlex
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    setup_logging(args.log_level)
    from ..reffiles.header import ReferenceFileError
    if (args.out / "manifest.json").exists():
        print(f"csst-sls-z regenerate: error: {args.out} already holds a finished reference set; "
              "sets are never edited in place, choose a new --out", file=sys.stderr)
        return EXIT_ERROR
    try:
        overrides = {}
        if args.calibration_target:
            overrides["calibration_target"] = args.calibration_target
        if args.backbone_budget_s:
            overrides["backbone_budget_s"] = args.backbone_budget_s
        regen = Regeneration(args.config, args.out, args.source_reference_dir, progress=show_progress(args.no_progress),
                             overrides=overrides or None, reuse_network=args.reuse_network,
                             command=shlex.join(["csst-sls-z", "regenerate", *argv]))
        regen.run(until=args.until)
    except (ReferenceFileError, OSError, ValueError) as exc:
        print(f"csst-sls-z regenerate: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if (args.out / "manifest.json").exists():
        print(f"reference set written: {args.out}")
        print(f"use it with: csst-sls-z run IN.fits -o OUT.fits --reference-dir {args.out}")
    else:
        print(f"stopped after step {args.until}; resume with the same command without --until: {args.out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
