"""Reference sets: finding, validating and describing the files the stage and simulator use.

A reference set is a directory holding one file per reference type and a
``manifest.json`` listing each file's name, type, sha256, schema version and pedigree.
Sets are versioned (``csst_sls_z_NNNN``) and never edited in place: regeneration writes a
new one. Lookup order: an explicit directory, then ``$CSST_SLS_Z_REFDIR``, then the
shipped set named in ``reference_files/CURRENT``; a bare set name (``csst_sls_z_0006``) is the
shipped set of that name, and a directory that does not exist fails listing the sets that do. Any single type can be overridden by
a path (``overrides={...}`` or ``$CSST_SLS_Z_REF_<TYPE>``), for tests and experiments; such a
file is validated on its own (type, schema, FITS checksums). Every check, of the manifest's
shape too, fails with one sentence naming the file, before any spectrum is read.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..durable import TempFile
from ..datamodel import (ENV_REFERENCE_DIR, ENV_REFERENCE_OVERRIDE_PREFIX, MANIFEST_NAME,
                        MANIFEST_SCHEMA_VERSION, PEDIGREES, REFFILE_SCHEMA_VERSION, REFTYPES,
                        REQUIRED_REFTYPES)
from .header import ReferenceFileError, verify_reference_file

log = logging.getLogger(__name__)

SHIPPED_ROOT = Path(__file__).resolve().parents[2] / "reference_files"
CURRENT_NAME = "CURRENT"
SET_PREFIX = "csst_sls_z_"


def sha256_file(path: os.PathLike, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


def shipped_set_dir() -> Path:
    current = SHIPPED_ROOT / CURRENT_NAME
    if not current.is_file():
        raise ReferenceFileError(f"no shipped reference set: {current} is missing")
    return SHIPPED_ROOT / current.read_text().strip()


def shipped_set_names() -> list[str]:
    """The names of the shipped sets (``reference_files/csst_sls_z_NNNN`` with a manifest), in order."""
    return _set_names(SHIPPED_ROOT)


def _set_names(root: Path) -> list[str]:
    try:
        return sorted(p.name for p in Path(root).glob(SET_PREFIX + "*") if (p / MANIFEST_NAME).is_file())
    except OSError:
        return []


def _missing_set_message(given: Path, source: str) -> str:
    """One sentence: ``given`` (from ``source``) does not exist, and the sets that do."""
    parent = given.parent
    local = _set_names(parent) if str(parent) not in ("", ".") and parent.resolve() != SHIPPED_ROOT else []
    shipped = shipped_set_names()
    if local:
        where = f"the sets in {parent} are {', '.join(local)}"
        if shipped:
            where += f"; the shipped sets, each given by its name alone, are {', '.join(shipped)}"
    elif shipped:
        where = f"the shipped sets, each given by its name alone, are {', '.join(shipped)}"
    else:
        where = f"no shipped set exists under {SHIPPED_ROOT}"
    return f"reference set {given}{source} does not exist; {where}"


def resolve_reference_dir(explicit: os.PathLike | None = None) -> Path:
    """The reference set's directory: ``explicit``, else ``$CSST_SLS_Z_REFDIR``, else the shipped default.

    A directory that exists is taken as it is. A bare name (``csst_sls_z_0006``, as the docs
    name the sets) that is not a directory here is the shipped set of that name. Anything else
    that does not exist fails with one sentence listing the sets that do.
    """
    source = ""
    given = explicit
    if not given:
        given = os.environ.get(ENV_REFERENCE_DIR)
        source = f" (from ${ENV_REFERENCE_DIR})"
    if not given:
        return shipped_set_dir()
    path = Path(given)
    if path.is_dir():
        return path
    if path.exists():
        raise ReferenceFileError(f"reference set {path}{source} is a file, not a directory")
    if len(path.parts) == 1 and path.name not in (".", "..") and (SHIPPED_ROOT / path.name).is_dir():
        return SHIPPED_ROOT / path.name
    raise ReferenceFileError(_missing_set_message(path, source))


@dataclass
class ReferenceSet:
    directory: Path
    manifest: dict
    paths: dict = field(default_factory=dict)     # reftype -> Path
    sha256: dict = field(default_factory=dict)    # reftype -> hex digest

    @property
    def set_id(self) -> str:
        return self.manifest.get("set_id", self.directory.name)

    @property
    def manifest_id(self) -> str:
        """Short content hash of the manifest: names the exact set in output provenance."""
        blob = json.dumps(self.manifest, sort_keys=True).encode()
        return f"{self.set_id}:{hashlib.sha256(blob).hexdigest()[:12]}"

    @property
    def pedigree(self) -> str:
        return self.manifest.get("pedigree", "UNKNOWN")

    def path(self, reftype: str) -> Path:
        if reftype not in self.paths:
            raise ReferenceFileError(f"reference set {self.directory} has no {reftype!r} file")
        return self.paths[reftype]


_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")


def _json_kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def read_manifest(directory: Path) -> dict:
    """The manifest of a set, checked for shape: every problem is one sentence naming the manifest."""
    mpath = Path(directory) / MANIFEST_NAME
    if not mpath.is_file():
        raise ReferenceFileError(f"reference directory {directory} has no {MANIFEST_NAME}")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as exc:
        raise ReferenceFileError(f"manifest {mpath} is not valid JSON ({' '.join(str(exc).split())})") from None
    if not isinstance(manifest, dict):
        raise ReferenceFileError(f"manifest {mpath} is {_json_kind(manifest)}, not a JSON object with "
                                 f"schema_version and files")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ReferenceFileError(f"manifest {mpath} has no integer schema_version")
    if version > MANIFEST_SCHEMA_VERSION:
        raise ReferenceFileError(
            f"manifest {mpath} has schema version {version}, newer than this code knows "
            f"({MANIFEST_SCHEMA_VERSION}); upgrade csst_sls_z")
    for key in ("set_id", "pedigree"):
        if key in manifest and not isinstance(manifest[key], str):
            raise ReferenceFileError(f"manifest {mpath} has a {key} that is {_json_kind(manifest[key])}, "
                                     f"not a string")
    files = manifest.get("files")
    if not isinstance(files, list):
        raise ReferenceFileError(f"manifest {mpath} has no list of files")
    first = {}
    for k, entry in enumerate(files):
        where = f"manifest {mpath} entry {k}"
        if not isinstance(entry, dict):
            raise ReferenceFileError(f"{where} is {_json_kind(entry)}, not an object")
        reftype = entry.get("reftype")
        if not isinstance(reftype, str) or reftype not in REFTYPES:
            raise ReferenceFileError(f"{where} lists unknown reference type {reftype!r}")
        where = f"{where} ({reftype})"
        for key in ("name", "sha256"):
            if key not in entry:
                raise ReferenceFileError(f"{where} has no {key}")
        name = entry["name"]
        if not isinstance(name, str) or not name.strip() or Path(name).is_absolute() or ".." in Path(name).parts:
            raise ReferenceFileError(f"{where} has name {name!r}, not a file name inside the set's directory")
        if not isinstance(entry["sha256"], str) or not _SHA256_RE.match(entry["sha256"]):
            raise ReferenceFileError(f"{where} has sha256 {entry['sha256']!r}, not 64 hexadecimal digits")
        schema = entry.get("schema_version", 0)
        if not isinstance(schema, int) or isinstance(schema, bool):
            raise ReferenceFileError(f"{where} has schema_version {schema!r}, not an integer")
        if reftype in first:
            raise ReferenceFileError(f"{where} lists {reftype} a second time (entry {first[reftype]} is the first)")
        first[reftype] = k
    return manifest


def load_reference_set(directory: os.PathLike | None = None, required=REQUIRED_REFTYPES,
                       overrides: dict | None = None, verify: bool = True, optional=()) -> ReferenceSet:
    """Find and validate a reference set; every required type must exist and match its sha256.

    An override (``overrides`` or ``$CSST_SLS_Z_REF_<TYPE>``) has no manifest entry, so it is
    validated on its own, like any reference file: its REFTYPE, its schema version and the
    CHECKSUM/DATASUM of every HDU (``reffile.verify_reference_file``). ``optional``: types
    validated when the set lists them (``datamodel.OPTIONAL_REFTYPES``), absent otherwise.
    """
    directory = resolve_reference_dir(directory)
    manifest = read_manifest(directory)
    refset = ReferenceSet(directory=directory, manifest=manifest)
    for entry in manifest["files"]:
        reftype = entry["reftype"]
        if entry.get("schema_version", 0) > REFFILE_SCHEMA_VERSION:
            raise ReferenceFileError(
                f"reference file {entry.get('name')} has schema version {entry.get('schema_version')}, "
                f"newer than this code knows ({REFFILE_SCHEMA_VERSION}); upgrade csst_sls_z")
        refset.paths[reftype] = directory / entry["name"]
        refset.sha256[reftype] = entry["sha256"].lower()
    env_over = {t: os.environ[ENV_REFERENCE_OVERRIDE_PREFIX + t.upper()] for t in REFTYPES
                if os.environ.get(ENV_REFERENCE_OVERRIDE_PREFIX + t.upper())}
    overridden = {**env_over, **(overrides or {})}
    for reftype, path in overridden.items():
        if reftype not in REFTYPES:
            raise ReferenceFileError(f"cannot override unknown reference type {reftype!r}")
        refset.paths[reftype] = Path(path)
        refset.sha256[reftype] = None          # no manifest entry: checked on its own below
        log.info("reference type %s overridden by %s", reftype, path)
    for reftype in required:
        if reftype not in refset.paths:
            raise ReferenceFileError(f"reference set {directory} has no {reftype!r} file")
    # ``optional`` types are checked like the required ones where the set has them.
    present = {t for t in optional if t in refset.paths}
    for reftype in sorted(set(required) | set(overridden) | present):
        path = refset.paths[reftype]
        if not path.is_file():
            raise ReferenceFileError(f"reference file {path} ({reftype}) is missing")
        if reftype in overridden:
            verify_reference_file(path, reftype)
            refset.sha256[reftype] = sha256_file(path)
        elif verify:
            digest = sha256_file(path)
            if digest != refset.sha256[reftype]:
                raise ReferenceFileError(
                    f"reference file {path} ({reftype}) fails its sha256 check: manifest says "
                    f"{refset.sha256[reftype][:12]}..., file is {digest[:12]}...")
    return refset


def write_manifest(directory: Path, files: dict, pedigree: str, provenance: dict | None = None,
                   set_id: str | None = None) -> Path:
    """Write manifest.json for ``files`` (reftype -> file name in ``directory``)."""
    if pedigree not in PEDIGREES:
        raise ValueError(f"pedigree must be one of {PEDIGREES}")
    directory = Path(directory)
    entries = []
    for reftype, name in sorted(files.items()):
        if reftype not in REFTYPES:
            raise ValueError(f"unknown reference type {reftype!r}")
        entries.append({"reftype": reftype, "name": name, "sha256": sha256_file(directory / name),
                        "schema_version": REFFILE_SCHEMA_VERSION, "pedigree": pedigree})
    manifest = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "set_id": set_id or directory.name,
        "pedigree": pedigree,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "code_version": __version__,
        "files": entries,
        "provenance": provenance or {},
    }
    path = directory / MANIFEST_NAME
    with TempFile(path) as tmp:
        tmp.path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        tmp.commit()
    return path


def next_set_dir(root: Path) -> Path:
    """The next unused versioned set directory under ``root`` (sets are never edited in place)."""
    root = Path(root)
    existing = [int(p.name[len(SET_PREFIX):]) for p in root.glob(SET_PREFIX + "[0-9]*")
                if p.name[len(SET_PREFIX):].isdigit()]
    return root / f"{SET_PREFIX}{max(existing, default=0) + 1:04d}"
