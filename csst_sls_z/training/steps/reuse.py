"""``--reuse-network SET``: take the trained backbone and head of an existing set; later steps rerun.

The data step still runs (the calibration, the thresholds and the evaluation need the same
simulated sets), so the new set must use the same configuration and seeds.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

NETWORK_STEPS = ("backbone", "head")      # marked done: their results are the set's
STALE = ("train_features_sample.npy", "pred_val.npz", "pred_test.npz")


def adopt_network(regen, refdir: Path):
    from ...network.weights import read_config
    from ...reffiles.sets import load_reference_set
    refdir = Path(refdir)
    refset = load_reference_set(refdir)
    manifest = json.loads((refdir / "manifest.json").read_text())
    prov = manifest.get("provenance", {})
    # A key the source's manifest lacks was added to RegenConfig later: the source had its default.
    from dataclasses import MISSING, fields
    defaults = {f.name: f.default for f in fields(type(regen.rc)) if f.default is not MISSING}
    source_config = {k: v for k, v in {**defaults, **prov.get("config", {})}.items() if k != "calibration_target"}
    mine = {k: v for k, v in regen.config_record().items() if k != "calibration_target"}
    if source_config != mine:
        changed = sorted(k for k in set(source_config) | set(mine) if source_config.get(k) != mine.get(k))
        raise ValueError(f"{refdir} was not trained with --config {regen.name} as it stands ({', '.join(changed)} "
                         "differ); its network cannot be reused here")
    for reftype in ("backbone", "bnnhead"):
        src = refset.path(reftype)
        if src.parent.resolve() != refdir.resolve():
            raise ValueError(f"{reftype} of {refdir} is overridden by {src}; unset the override to reuse the set")
        shutil.copy2(src, regen.work / f"{reftype}.fits")
    for stale in STALE:
        (regen.work / stale).unlink(missing_ok=True)
    if read_config(regen.work / "backbone.fits", "backbone").name != regen.rc.network:
        raise ValueError(f"{refdir}'s backbone is not the {regen.rc.network} network")
    # The training curves belong to the network: carry them into the new evaluation.
    evaluation = refdir / "evaluation.json"
    if evaluation.exists():
        regen.save_json("backbone_histories.json", json.loads(evaluation.read_text()).get("backbone_histories", {}))
    regen.network_source = {"set": refset.manifest_id, "path": str(refdir),
                            "training_data_sha256": prov.get("training_data_sha256", {}),
                            "step_wall_s": {k: v for k, v in prov.get("step_wall_s", {}).items()
                                            if k in NETWORK_STEPS}}
    regen.save_json("network_source.json", regen.network_source)
    for step in NETWORK_STEPS:
        regen.mark(step, 0.0)
    log.info("reusing the backbone and MNF head of %s; steps from calibrate on rerun", refset.manifest_id)
