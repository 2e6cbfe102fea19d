"""Shared fixtures: small simulated products, a DUMMY reference set with a tiny network and one
stage on it; and the ``slow`` marker.

Slow tests (real regeneration, the benchmark suite at tiny size, the objective curves and the
other training studies, the large fuzz counts, multi-process and subprocess runs of the whole
stage, the README's own command) are marked ``@pytest.mark.slow``. ``python -m pytest -q``
leaves them out (they are counted as deselected); ``python -m pytest -q --slow`` runs every
test, ``python -m pytest -q -m slow`` only the slow ones (what ``.ci/run`` adds after the
default run, so nothing goes untested).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# ---------------------------------------------------------------- the slow marker
def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False,
                     help="also run the tests marked slow (python -m pytest -q -m slow runs only those)")


# Slow tests in files whose owners mark them there later: (file name, test function name).
# A test of tests/test_batch.py that uses its ``client`` fixture (a Dask LocalCluster of
# worker processes) is slow without being listed.
SLOW_ELSEWHERE = {
    # the whole stage in a subprocess (python -m: TensorFlow, the network)
    ("test_pipeline_hooks.py", "test_python_m_entry_exit_codes"),
    ("test_pipeline_hooks.py", "test_hook_run_prints_no_warning"),
    ("test_pipeline_hooks.py", "test_no_spectra_gives_the_distinct_exit_code"),
    # three networks built for the processor's three runs; run_stage, which it calls, stays in the default run
    ("test_pipeline_hooks.py", "test_csst_processor_adapter"),
}


def _is_slow(item) -> bool:
    if item.get_closest_marker("slow"):
        return True
    name = item.path.name
    if name == "test_batch.py" and "client" in item.fixturenames:
        return True
    return (name, getattr(item, "originalname", item.name)) in SLOW_ELSEWHERE


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _is_slow(item) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
    if config.getoption("--slow") or "slow" in (config.getoption("markexpr") or ""):
        return                   # --slow: everything; -m '...slow...': the expression decides
    keep = [item for item in items if not item.get_closest_marker("slow")]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("slow")])
        items[:] = keep


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def models():
    from csst_sls_z.simulation import load_models
    instrument, sedlib, refset = load_models()
    return instrument, sedlib


@pytest.fixture(scope="session")
def dummy_refset(tmp_path_factory):
    from csst_sls_z.training.dummy import write_dummy_set
    return write_dummy_set(tmp_path_factory.mktemp("dummy_refset") / "set")


@pytest.fixture(scope="session")
def dummy_stage(dummy_refset):
    """One stage on the DUMMY set, 4 BNN samples, its network built once for the whole session.
    Tests that change a parameter take ``copy.copy(stage)`` and set ``params`` on the copy."""
    from csst_sls_z.stage import RedshiftStage
    stage = RedshiftStage(reference_dir=dummy_refset, samples=4)
    stage.sampler()
    return stage


@pytest.fixture(scope="session")
def sim_product(tmp_path_factory, models):
    """A Layout A product of 40 test-population objects with TRUTH."""
    from csst_sls_z.simulation import simulate_products
    out = tmp_path_factory.mktemp("sim")
    (path,) = simulate_products(40, 11, "test", 1000, out, *models, progress=False)
    return path


@pytest.fixture
def product_copy(sim_product, tmp_path):
    """A private copy of the simulated product that a test may degrade."""
    dst = tmp_path / "input.fits"
    dst.write_bytes(Path(sim_product).read_bytes())
    return dst


def edit_product(path, band, objid, **columns):
    """Replace vector columns of one object in one band of a Layout A product, in place."""
    from astropy.io import fits
    with fits.open(path, mode="update") as hdul:
        table = hdul[f"SPEC_{band}"].data
        row = np.where(table["OBJID"] == objid)[0][0]
        for name, value in columns.items():
            table[name][row] = value
