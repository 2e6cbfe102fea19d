"""Step ``write``: copy the files into the set and write its manifest (never over an existing one)."""
from __future__ import annotations

import os
import platform
import shutil

import numpy as np

TRAINED = ("backbone", "bnnhead", "calibration", "thresholds", "refinement")     # made in work/ by the steps
FROM_SOURCE = ("instrument", "sedlib")                              # copied from the source set


def run(regen):
    from ... import __version__
    from ...tfenv import import_tensorflow
    tf = import_tensorflow()
    from ...reffiles.sets import write_manifest
    from ...reffiles.tables import write_wavegrid
    out = regen.out
    files = {}
    for reftype in TRAINED:
        shutil.copy2(regen.work / f"{reftype}.fits", out / f"{reftype}.fits")
        files[reftype] = f"{reftype}.fits"
    for reftype in FROM_SOURCE:
        src = regen.source_set.path(reftype)
        shutil.copy2(src, out / src.name)
        files[reftype] = src.name
    write_wavegrid(out / "wavegrid.fits", regen.grid, "SIMULATION", overwrite=True)
    files["wavegrid"] = "wavegrid.fits"
    data = regen.load_json("data.json", {})
    provenance = {
        "command": regen.command or f"csst-sls-z regenerate --config {regen.name} --out {out}",
        "config": regen.rc.__dict__, "network": regen.cfg.to_dict(), "objective": regen.cfg.objective,
        "seeds": regen.seeds,
        "training_data_sha256": {k: v["sha256_sample"] for k, v in data.items() if "sha256_sample" in v},
        "sed_families": data.get("families", {}), "variations": regen.rc.variations,
        "source_reference_set": regen.source_set.manifest_id, "code_version": __version__,
        "tensorflow": tf.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores", "step_wall_s": regen.timings,
    }
    if regen.network_source:
        provenance["network_from"] = regen.network_source
    write_manifest(out, files, "SIMULATION", provenance=provenance)
