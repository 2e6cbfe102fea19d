"""Shared fixtures: small simulated products and a DUMMY reference set with a tiny network."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
