"""Reference sets: lookup order, manifest checks, overrides, headers."""
from __future__ import annotations

import json
import shutil

import pytest
from astropy.io import fits

from csst_sls_z.datamodel import ENV_REFERENCE_DIR, REF_HEADER_KEYS
from csst_sls_z.reference import (SHIPPED_ROOT, load_reference_set, next_set_dir, resolve_reference_dir,
                                  shipped_set_dir, write_manifest)
from csst_sls_z.reffile import ReferenceFileError


def test_lookup_order(tmp_path, monkeypatch, dummy_refset):
    monkeypatch.delenv(ENV_REFERENCE_DIR, raising=False)
    assert resolve_reference_dir() == shipped_set_dir()
    monkeypatch.setenv(ENV_REFERENCE_DIR, str(dummy_refset))
    assert resolve_reference_dir() == dummy_refset
    assert resolve_reference_dir(tmp_path) == tmp_path                     # explicit wins


def test_shipped_set_verifies_and_every_file_has_a_standard_header():
    refset = load_reference_set(shipped_set_dir(), required=("instrument", "sedlib"))
    for reftype, path in refset.paths.items():
        hdr = fits.getheader(path)
        for key in REF_HEADER_KEYS:
            assert key in hdr, (path, key)
        assert hdr["REFTYPE"] == reftype
        assert hdr["PEDIGREE"] in ("SIMULATION", "DUMMY")


def test_checks_fail_with_one_sentence(tmp_path, dummy_refset):
    bad = tmp_path / "set"
    shutil.copytree(dummy_refset, bad)
    (bad / "thresholds.fits").unlink()
    with pytest.raises(ReferenceFileError, match="thresholds.*missing"):
        load_reference_set(bad)
    shutil.rmtree(bad)
    shutil.copytree(dummy_refset, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ReferenceFileError, match="newer than this code knows"):
        load_reference_set(bad)
    with pytest.raises(ReferenceFileError, match="no manifest.json"):
        load_reference_set(tmp_path)


def test_override_one_type(tmp_path, dummy_refset, monkeypatch):
    other = tmp_path / "other_thresholds.fits"
    shutil.copy(dummy_refset / "thresholds.fits", other)
    refset = load_reference_set(dummy_refset, overrides={"thresholds": other})
    assert refset.path("thresholds") == other
    monkeypatch.setenv("CSST_SLS_Z_REF_CALIBRATION", str(tmp_path / "nope.fits"))
    with pytest.raises(ReferenceFileError, match="missing"):
        load_reference_set(dummy_refset)


def test_wrong_reftype_refused(tmp_path, dummy_refset):
    bad = tmp_path / "set"
    shutil.copytree(dummy_refset, bad)
    shutil.copy(bad / "calibration.fits", bad / "thresholds.fits")
    files = {e["reftype"]: e["name"] for e in json.loads((bad / "manifest.json").read_text())["files"]}
    write_manifest(bad, files, "DUMMY")
    from csst_sls_z.refdata import load_thresholds
    with pytest.raises(ReferenceFileError, match="REFTYPE='calibration', expected 'thresholds'"):
        load_thresholds(load_reference_set(bad).path("thresholds"))


def test_sets_are_versioned_never_reused(tmp_path):
    assert next_set_dir(tmp_path).name == "csst_sls_z_0001"
    (tmp_path / "csst_sls_z_0001").mkdir()
    (tmp_path / "csst_sls_z_0007").mkdir()
    assert next_set_dir(tmp_path).name == "csst_sls_z_0008"
    assert (SHIPPED_ROOT / "CURRENT").read_text().strip().startswith("csst_sls_z_")
