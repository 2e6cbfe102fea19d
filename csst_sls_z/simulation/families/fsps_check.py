"""``FSPS_QSF12``: an independent check family, never trained on.

The 12 FSPS templates (``fsps_QSF_12_v3``, with nebular lines) that grizli (G. Brammer,
MIT licence) ships for eazy-style fits. They are reserved for independent tests: no
regeneration may train on them, and no setting may be chosen by looking at them
(``check_only``; training/regenerate refuses them). Nothing of them is committed.

Each object is a non-negative mix of 1-3 of the 12 templates (Dirichlet weights),
the way eazy describes a galaxy. SED_COEFF holds the weights, SED_PARAM the template
numbers (1-12) in the same order (T1, T2, T3).

The templates are found in ``$CSST_SLS_Z_FSPS_TEMPLATES`` (a directory holding
``fsps_QSF_12_v3_001.dat`` ... ``_012.dat``), else in an installed grizli. Without grizli:
``pip download grizli==1.14.3 --no-deps`` and unpack ``grizli/data/templates/fsps``.
The files are F_lambda (eazy's convention) against rest-frame Angstrom.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np

from . import FamilyUnavailable, SEDFamily

ENV_TEMPLATE_DIR = "CSST_SLS_Z_FSPS_TEMPLATES"
TEMPLATE_FILES = tuple(f"fsps_QSF_12_v3_{k:03d}.dat" for k in range(1, 13))
MAX_MIX = 3          # templates mixed per object


def locate_templates(root=None) -> list[Path]:
    if root is None:
        root = os.environ.get(ENV_TEMPLATE_DIR)
    if root is None:
        spec = importlib.util.find_spec("grizli")
        if spec is not None and spec.submodule_search_locations:
            root = Path(list(spec.submodule_search_locations)[0]) / "data" / "templates" / "fsps"
    paths = [Path(root) / f for f in TEMPLATE_FILES] if root is not None else []
    if not paths or not all(p.is_file() for p in paths):
        where = f"in {root}" if root is not None else "(grizli is not installed)"
        raise FamilyUnavailable(
            f"The FSPS check templates ({TEMPLATE_FILES[0]} ... {TEMPLATE_FILES[-1]}) were not found {where}; "
            f"set ${ENV_TEMPLATE_DIR} to grizli's data/templates/fsps directory "
            "(pip download grizli==1.14.3 --no-deps, then unpack it).")
    return paths


class FspsCheckFamily(SEDFamily):
    name = "FSPS_QSF12"
    param_names = tuple(f"T{k}" for k in range(1, MAX_MIX + 1))
    default_weight = 1.0
    check_only = True

    def __init__(self, sedlib, fsps_templates=None, **_options):
        from ..sedlib import _reduce
        paths = locate_templates(fsps_templates)
        h = hashlib.sha256()
        rows = []
        for p in paths:
            raw = p.read_bytes()
            h.update(raw)
            wave, flux = np.loadtxt(p, unpack=True)
            keep = (wave > 0.8 * sedlib.wave[0]) & (wave < 1.2 * sedlib.wave[-1])
            spec = _reduce(wave[keep], flux[keep], sedlib.wave)
            rows.append(spec / np.median(spec))         # unit median: the weights mean shares of light
        self.templates = np.maximum(np.array(rows), 0.0)
        self._sha256 = h.hexdigest()

    def draw(self, z, rng):
        n = z.size
        coeff, params = self.blank(n)
        k = rng.integers(1, MAX_MIX + 1, n)
        for i in range(n):
            which = rng.choice(len(self.templates), k[i], replace=False)
            coeff[i, :k[i]] = rng.dirichlet(np.ones(k[i]))
            params[i, :k[i]] = which + 1
        return np.full(n, -1, np.int32), coeff, params

    def rest_flux(self, index, coeff, params):
        out = np.zeros((len(coeff), self.templates.shape[1]))
        for j in range(MAX_MIX):
            t = params[:, j]
            ok = np.isfinite(t)
            out[ok] += coeff[ok, j, None] * self.templates[t[ok].astype(int) - 1]
        return out

    def provenance(self) -> dict:
        return {"templates_sha256": self._sha256}
