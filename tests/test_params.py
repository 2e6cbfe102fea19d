"""One parameter set: every stage option means the same in `run`, `batch` and the scheduler hook.

The options are generated from ``RedshiftStage.spec``; the stage's checked parameters travel
as one object (``RedshiftStage.get_pars``) to every batch worker. These tests read the spec, so a
parameter added later is covered without editing them.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import fitsio
import numpy as np
import pytest

from csst_sls_z import datamodel as dm
from csst_sls_z.stage import RedshiftStage


def test_parameter_cards_are_unique_and_named_for_every_recorded_parameter():
    recorded = [name for name, p in RedshiftStage.spec.items() if p.recorded]
    keywords = [dm.param_keyword(name) for name in recorded]
    assert len(set(keywords)) == len(keywords)
    assert all(k.startswith(dm.KW_PARAM) and len(k) <= 8 for k in keywords)
    # A parameter without its own card is refused, not given a cut-down name that may collide.
    with pytest.raises(KeyError, match="PARAM_KEYWORDS"):
        dm.param_keyword("samples_per_block")


def test_docs_name_the_cards_as_they_are_written():
    text = (Path(__file__).parents[1] / "docs" / "stage.md").read_text()
    for name, p in RedshiftStage.spec.items():
        if p.recorded:
            assert f"`{dm.param_keyword(name)}`" in text, name


def _non_default(param, dummy_refset):
    """A valid value other than the default, as command-line words."""
    opt = "--" + param.name.replace("_", "-")
    if param.type is bool:
        return [opt]
    if param.type is int:
        value = max(param.minimum or 0, param.default // 2)
        value = value if value != param.default else param.default + 1
        return [opt, str(value)]
    if param.type is str:
        return [opt, next(c for c in param.choices if c != param.default)]
    if param.name == "reference_dir":
        return [opt, str(dummy_refset)]
    raise AssertionError(f"no non-default value known for {param.name} ({param.type})")


def _stage_words(dummy_refset):
    words = []
    for param in RedshiftStage.spec.values():
        if param.option:
            words += _non_default(param, dummy_refset)
    # reference_overrides (no option of its own): one --override-<type>, the set's own file.
    words += ["--override-calibration", str(dummy_refset / "calibration.fits")]
    return words


def _param_cards_and_catalog(path):
    hdr = fitsio.read_header(path, ext=dm.EXT_REDSHIFT)
    cards = {k: hdr[k] for k in hdr.keys() if k.startswith(dm.KW_PARAM)}
    return cards, fitsio.read(path, ext=dm.EXT_REDSHIFT)


@pytest.mark.slow
def test_run_batch_and_hook_write_the_same_cards_and_catalog(sim_product, dummy_refset, tmp_path):
    from csst_sls_z.batch import main as batch_main
    from csst_sls_z.stage_cli import main as run_main
    from pipeline_hooks.csst_sls_z_hook import main as hook_main
    words = _stage_words(dummy_refset)
    inputs = []
    for name in ("a.fits", "b.fits"):
        inputs.append(tmp_path / name)
        shutil.copy(sim_product, inputs[-1])
    run_out = tmp_path / "run"
    run_out.mkdir()
    assert run_main([str(p) for p in inputs] + ["-o", str(run_out), "--no-progress", *words]) == 0
    assert hook_main(["--inputs", *map(str, inputs), "--output-dir", str(tmp_path / "hook"), *words]) == 0
    batch_out = tmp_path / "batch"
    batch_args = [*map(str, inputs), "-o", str(batch_out), "--workers", "2", "--no-progress", *words]
    assert batch_main(batch_args) == 0

    recorded = {dm.param_keyword(n) for n, p in RedshiftStage.spec.items() if p.recorded}
    for p in inputs:
        name = f"{p.stem}_slsz.fits"
        cards, cat = _param_cards_and_catalog(run_out / name)
        assert set(cards) == recorded                    # every recorded parameter was non-default
        assert dm.PZ_COLUMN.name not in cat.dtype.names  # no_pz reached the writer
        for other in (tmp_path / "hook" / name, batch_out / name):
            other_cards, other_cat = _param_cards_and_catalog(other)
            assert other_cards == cards, other
            assert other_cat.dtype == cat.dtype
            for col in cat.dtype.names:
                np.testing.assert_array_equal(other_cat[col], cat[col], err_msg=f"{other}: {col}")

    # The same options again (less --overwrite, which redoes everything by design): every file
    # verifies and is skipped. Another value of a recorded parameter: all are redone.
    from csst_sls_z.batch import SUMMARY_NAME
    batch_args.remove("--overwrite")
    assert batch_main(batch_args) == 0
    summary = fitsio.read(batch_out / f"{SUMMARY_NAME}.fits")
    assert {a.strip() for a in summary["ACTION"].astype(str)} == {"skipped"}
    changed = list(batch_args)
    changed[changed.index("--seed") + 1] = "5"
    assert batch_main(changed) == 0
    summary = fitsio.read(batch_out / f"{SUMMARY_NAME}.fits")
    assert {a.strip() for a in summary["ACTION"].astype(str)} == {"processed"}


def test_batch_workers_receive_every_parameter(dummy_refset, tmp_path, monkeypatch):
    """The worker's stage is built from the client's ``get_pars()``: no parameter is lost on the way."""
    from csst_sls_z import batch
    pars = RedshiftStage(reference_dir=dummy_refset, samples=3, no_pz=True, backbone_precision="bfloat16",
                         per_object_noise=True).get_pars()
    monkeypatch.setattr(batch, "_CACHE", {})
    stage = batch._file_stage(batch._base_stage(pars), overwrite=True, need_network=False)
    assert stage.params == {**pars, "overwrite": True}
    assert set(stage.params) == set(RedshiftStage.spec)
