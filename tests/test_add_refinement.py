"""training/add_refinement: a new set with the source's files unchanged plus a fitted refinement file."""
from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_a_set_gains_a_refinement_and_keeps_everything_else(dummy_refset, tmp_path):
    from conftest import sha256
    from csst_sls_z.reffiles.refinement import load_refinement
    from csst_sls_z.reffiles.sets import load_reference_set
    from csst_sls_z.training.add_refinement import main
    out = tmp_path / "csst_sls_z_9100"
    assert main(["--source", str(dummy_refset), "--out", str(out), "--n", "60", "--sps-library-n", "40",
                 "--log-level", "WARNING"]) == 0
    new = load_reference_set(out, optional=("refinement",))
    old = load_reference_set(dummy_refset)
    for reftype, path in old.paths.items():
        assert sha256(new.paths[reftype]) == sha256(path), reftype       # copied unchanged
    model = load_refinement(new.path("refinement"))
    prov = json.loads((out / "manifest.json").read_text())["provenance"]
    assert prov["refinement"]["temperature"] == pytest.approx(model.temperature)
    assert prov["command"].startswith("python -m csst_sls_z.training.add_refinement --source")
    # Sets are never edited in place: a second run into the same directory is refused.
    assert main(["--source", str(dummy_refset), "--out", str(out), "--n", "60"]) == 1
