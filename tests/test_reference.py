"""Reference sets: lookup order, manifest checks, overrides, headers."""
from __future__ import annotations

import json
import shutil

import pytest
from astropy.io import fits

from csst_sls_z.datamodel import ENV_REFERENCE_DIR, REF_HEADER_KEYS
from csst_sls_z.reffiles.sets import (SHIPPED_ROOT, load_reference_set, next_set_dir, resolve_reference_dir,
                                  shipped_set_dir, write_manifest)
from csst_sls_z.reffiles.header import ReferenceFileError


def test_lookup_order(tmp_path, monkeypatch, dummy_refset):
    monkeypatch.delenv(ENV_REFERENCE_DIR, raising=False)
    assert resolve_reference_dir() == shipped_set_dir()
    monkeypatch.setenv(ENV_REFERENCE_DIR, str(dummy_refset))
    assert resolve_reference_dir() == dummy_refset
    assert resolve_reference_dir(tmp_path) == tmp_path                     # explicit wins


def test_a_bare_set_name_is_the_shipped_set(tmp_path, monkeypatch):
    """The docs name sets by name (csst_sls_z_0006): that is the shipped set, from any directory."""
    monkeypatch.chdir(tmp_path)
    name = shipped_set_dir().name
    assert resolve_reference_dir(name) == SHIPPED_ROOT / name
    monkeypatch.setenv(ENV_REFERENCE_DIR, name)
    assert resolve_reference_dir() == SHIPPED_ROOT / name
    (tmp_path / name).mkdir()                                               # a directory here wins
    assert resolve_reference_dir(name) == type(tmp_path)(name)


@pytest.mark.parametrize("given", ["reference_files/csst_sls_z_006", "csst_sls_z_006", "/nowhere/set"])
def test_a_missing_set_lists_the_sets_that_exist(given, monkeypatch):
    monkeypatch.delenv(ENV_REFERENCE_DIR, raising=False)
    with pytest.raises(ReferenceFileError) as info:
        load_reference_set(given)
    msg = str(info.value)
    assert msg.startswith(f"reference set {given} does not exist; ") and "manifest" not in msg and "\n" not in msg
    assert shipped_set_dir().name in msg and "csst_sls_z_0001" in msg


def test_a_missing_set_lists_its_siblings(tmp_path, dummy_refset, monkeypatch):
    monkeypatch.setenv(ENV_REFERENCE_DIR, str(tmp_path / "csst_sls_z_0009"))
    shutil.copytree(dummy_refset, tmp_path / "csst_sls_z_0001")
    with pytest.raises(ReferenceFileError, match=r"\(from \$CSST_SLS_Z_REFDIR\) does not exist; the sets in .* are "
                                                 r"csst_sls_z_0001; the shipped sets"):
        resolve_reference_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ReferenceFileError, match="is a file, not a directory"):
        resolve_reference_dir(tmp_path / "file")


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
    from csst_sls_z.reffiles.tables import load_thresholds
    with pytest.raises(ReferenceFileError, match="REFTYPE='calibration', expected 'thresholds'"):
        load_thresholds(load_reference_set(bad).path("thresholds"))


def test_sets_are_versioned_never_reused(tmp_path):
    assert next_set_dir(tmp_path).name == "csst_sls_z_0001"
    (tmp_path / "csst_sls_z_0001").mkdir()
    (tmp_path / "csst_sls_z_0007").mkdir()
    assert next_set_dir(tmp_path).name == "csst_sls_z_0008"
    assert (SHIPPED_ROOT / "CURRENT").read_text().strip().startswith("csst_sls_z_")


def _flip_one_bit(path):
    import fitsio
    with fitsio.FITS(str(path)) as f:
        off = f[1].get_offsets()
    raw = bytearray(path.read_bytes())
    raw[(off["data_start"] + off["data_end"]) // 2] ^= 0x04
    path.write_bytes(bytes(raw))


def test_override_is_validated_like_any_reference_file(tmp_path, dummy_refset, monkeypatch):
    """Issue 16 case 8: an override has no manifest entry, so it is checked on its own: REFTYPE,
    schema version and the CHECKSUM/DATASUM of every HDU (present, and holding)."""
    from csst_sls_z.reffiles.sets import sha256_file
    good = tmp_path / "backbone_copy.fits"
    shutil.copy(dummy_refset / "backbone.fits", good)
    refset = load_reference_set(dummy_refset, overrides={"backbone": good})
    assert refset.path("backbone") == good and refset.sha256["backbone"] == sha256_file(good)

    flipped = tmp_path / "flipped.fits"
    shutil.copy(good, flipped)
    _flip_one_bit(flipped)
    monkeypatch.setenv("CSST_SLS_Z_REF_BACKBONE", str(flipped))
    with pytest.raises(ReferenceFileError, match=r"flipped.fits \(backbone\) fails its FITS checksum in HDU 1"):
        load_reference_set(dummy_refset)
    monkeypatch.delenv("CSST_SLS_Z_REF_BACKBONE")

    with fits.open(good) as hdul:
        hdul.writeto(tmp_path / "unsummed.fits", checksum="remove")
    with pytest.raises(ReferenceFileError, match="has no CHECKSUM/DATASUM in HDU 0"):
        load_reference_set(dummy_refset, overrides={"backbone": tmp_path / "unsummed.fits"})
    with pytest.raises(ReferenceFileError, match="REFTYPE='bnnhead', expected 'backbone'"):
        load_reference_set(dummy_refset, overrides={"backbone": dummy_refset / "bnnhead.fits"})
    (tmp_path / "text.fits").write_text("not FITS")
    with pytest.raises(ReferenceFileError, match="text.fits is not a readable FITS file"):
        load_reference_set(dummy_refset, overrides={"thresholds": tmp_path / "text.fits"})


@pytest.mark.parametrize("manifest, words", [
    ([], "is a list, not a JSON object"),
    ("text", "is a string, not a JSON object"),
    ({"schema_version": 1, "files": [{"reftype": "wavegrid", "name": "wavegrid.fits"}]},
     "entry 0 (wavegrid) has no sha256"),
    ({"schema_version": 1, "files": [{"reftype": "wavegrid", "sha256": "0" * 64}]}, "entry 0 (wavegrid) has no name"),
    ({"schema_version": 1, "files": [{"reftype": "wavegrid", "name": "/etc/passwd", "sha256": "0" * 64}]},
     "not a file name inside the set's directory"),
    ({"schema_version": 1, "files": [None]}, "entry 0 is null, not an object"),
    ({"schema_version": 1, "files": [{"reftype": 3, "name": "x", "sha256": "0" * 64}]}, "unknown reference type 3"),
    ({"schema_version": True, "files": []}, "no integer schema_version"),
    ({"schema_version": 1, "files": [], "pedigree": ["SIMULATION"]}, "pedigree that is a list, not a string"),
], ids=["list", "string", "no-sha256", "no-name", "absolute-name", "null-entry", "reftype-number",
        "schema-bool", "pedigree-list"])
def test_malformed_manifest_one_sentence_naming_it(tmp_path, manifest, words):
    """Issue 16 case 9: whatever shape a manifest has, the error is one sentence naming it."""
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ReferenceFileError) as info:
        load_reference_set(tmp_path, required=())
    msg = str(info.value)
    assert str(tmp_path / "manifest.json") in msg and words in msg and "\n" not in msg, msg
