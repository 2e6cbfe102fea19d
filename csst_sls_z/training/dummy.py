"""A DUMMY reference set: the real file formats around an untrained tiny network.

Used by the test suite (and by anyone wiring the stage into a pipeline before a trained
set is at hand) to run the real code path end to end in seconds. Its redshifts mean
nothing; its manifest says PEDIGREE = DUMMY.
"""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np


def write_dummy_set(out_dir: Path, source_refdir=None, network: str = "smoke", seed: int = 0) -> Path:
    from ..tfenv import import_tensorflow
    tf = import_tensorflow()
    from ..calibration import BetaCalibration, ScaleCalibration
    from ..network.config import CONFIGS
    from ..network.loader import build_network
    from ..network.weights import save_weights
    from ..reffiles.tables import Thresholds, grid_from_instrument, write_calibration, write_thresholds, write_wavegrid
    from ..reffiles.sets import write_manifest
    from ..simulation import load_models
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    instrument, _, source = load_models(source_refdir)
    grid = grid_from_instrument(instrument)
    cfg = replace(CONFIGS[network], input_length=grid.length)
    tf.random.set_seed(seed)
    backbone, head, _ = build_network(cfg)
    n_feat = backbone.output["features"].shape[-1]
    # The trained head starts from a zero output layer; a dummy one needs some spread.
    rng = np.random.default_rng(seed)
    head.out_layer.kernel.assign(rng.normal(0, 0.3, head.out_layer.kernel.shape).astype(np.float32))
    save_weights(backbone, out / "backbone.fits", "backbone", cfg, "DUMMY", "untrained backbone (DUMMY)")
    save_weights(head, out / "bnnhead.fits", "bnnhead", cfg, "DUMMY", "untrained MNF head (DUMMY)")
    write_wavegrid(out / "wavegrid.fits", grid, "DUMMY")
    write_calibration(out / "calibration.fits", BetaCalibration(1.0, 1.0, 0.0), ScaleCalibration(1.0), "DUMMY")
    write_thresholds(out / "thresholds.fits", Thresholds(low_snr=0.5, large_zerr=0.05, ood_max=1e6,
                                                          ood_mean=np.zeros(n_feat), ood_precision=np.eye(n_feat),
                                                          z_min=cfg.z_min, z_max=cfg.z_max), "DUMMY")
    files = {t: f"{t}.fits" for t in ("backbone", "bnnhead", "wavegrid", "calibration", "thresholds")}
    for reftype in ("instrument", "sedlib"):
        src = source.path(reftype)
        shutil.copy2(src, out / src.name)
        files[reftype] = src.name
    write_manifest(out, files, "DUMMY", provenance={"made_by": "csst_sls_z.training.dummy.write_dummy_set"})
    return out
