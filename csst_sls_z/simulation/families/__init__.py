"""SED families: where the simulated galaxies' rest-frame spectra come from.

Each family is one module of this package with a class implementing :class:`SEDFamily`,
and one entry in :data:`FAMILIES`. Nothing else in the code base names a family: the
population draws through :class:`FamilySet`, the forward model asks it for rest-frame
spectra, and TRUTH records the family's name and its physical parameters in columns any
family can fill (``SED_LIB``, ``SED_INDEX``, ``SED_COEFF``, ``SED_PARAM``; the TRUTH
header names each family's parameters, docs/simulation.md lists them).

Adding a family: write ``families/NAME.py`` with a subclass of :class:`SEDFamily`, add
``"NAME": "NAME:ClassName"`` to :data:`FAMILIES`.
"""
from __future__ import annotations

import importlib
import logging

import numpy as np

from ...datamodel import N_SED_COEFF, N_SED_PARAM

log = logging.getLogger(__name__)

# name -> "module:Class" inside this package, loaded only when asked for (SPS needs an extra).
FAMILIES = {
    "REDROCK2016": "pca:Redrock2016Family",
    "KCORRECT": "pca:KcorrectFamily",
    "SPS": "sps:SPSFamily",
}
# What `simulate` uses unless --families says otherwise: the families every install can draw.
DEFAULT_FAMILIES = ("REDROCK2016", "KCORRECT")


class FamilyUnavailable(RuntimeError):
    """A family's data cannot be had on this install (one sentence says how to get it)."""


class SEDFamily:
    """One SED family. Subclasses set ``name``, ``param_names`` and ``default_weight``."""

    name: str = ""
    param_names: tuple = ()
    default_weight: float = 1.0

    def draw(self, z: np.ndarray, rng: np.random.Generator):
        """(index (n,) int32, coeff (n, N_SED_COEFF), params (n, N_SED_PARAM)) for objects at ``z``."""
        raise NotImplementedError

    def rest_flux(self, index, coeff, params) -> np.ndarray:
        """(n, W) rest-frame F_lambda on the common rest grid, arbitrary scale, >= 0."""
        raise NotImplementedError

    def provenance(self) -> dict:
        """What identifies the family's data (a hash where the data is built per run)."""
        return {}

    @staticmethod
    def blank(n: int):
        return np.full((n, N_SED_COEFF), 0.0), np.full((n, N_SED_PARAM), np.nan)


def parse_families(text: str) -> dict:
    """``"SPS:0.5,KCORRECT:0.3,REDROCK2016"`` -> {name: weight or None}, names checked."""
    out = {}
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        name, _, weight = part.partition(":")
        name = name.strip().upper()
        if name not in FAMILIES:
            raise ValueError(f"unknown SED family {name!r}; choose from {', '.join(FAMILIES)}")
        try:
            w = float(weight) if weight else None
        except ValueError:
            raise ValueError(f"the weight of SED family {name} must be a number, not {weight!r}") from None
        if w is not None and not w > 0:
            raise ValueError(f"the weight of SED family {name} must be positive, not {weight}")
        out[name] = w
    if not out:
        raise ValueError("no SED family given")
    return out


def family_class(name: str) -> type:
    module, cls = FAMILIES[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def make_family(name: str, sedlib, **options) -> SEDFamily:
    return family_class(name)(sedlib, **options)


class FamilySet:
    """The families a run draws from, with their mixture weights.

    ``families``: a string for :func:`parse_families`, or a {name: weight or None} dict;
    ``options``: keyword arguments handed to each family's constructor (e.g. the SPS
    library, see families/sps.py). The set also serves the rest grid (``wave``) and the
    basis vectors of the template fit, so it can stand wherever the SED library did.
    """

    def __init__(self, sedlib, families=DEFAULT_FAMILIES, **options):
        if isinstance(families, str):
            families = parse_families(families)
        elif not isinstance(families, dict):
            families = {f: None for f in families}
        self.sedlib = sedlib
        self.wave = sedlib.wave
        self.basis = sedlib.basis
        self.families = {name: make_family(name, sedlib, **options) for name in families}
        w = np.array([families[n] if families[n] is not None else self.families[n].default_weight
                      for n in self.families], float)
        self.weights = w / w.sum()

    @property
    def names(self) -> tuple:
        return tuple(self.families)

    def only(self, name) -> "FamilySet":
        """This set reduced to one of its families (the same objects, so a library loads once)."""
        out = object.__new__(FamilySet)
        out.sedlib, out.wave, out.basis = self.sedlib, self.wave, self.basis
        out.families = {name: self.family(name)}
        out.weights = np.ones(1)
        return out

    def spec(self) -> str:
        return ",".join(f"{n}:{w:.4g}" for n, w in zip(self.names, self.weights))

    def draw(self, z, rng):
        """Family, index, coefficients and parameters of each object at ``z``."""
        n = z.size
        if len(self.families) == 1:
            which = np.zeros(n, dtype=int)
        else:
            which = np.searchsorted(np.cumsum(self.weights)[:-1], rng.random(n), side="right")
        sed_lib = np.empty(n, dtype="U12")
        index = np.full(n, -1, dtype=np.int32)
        coeff, params = SEDFamily.blank(n)
        for k, (name, fam) in enumerate(self.families.items()):
            sel = np.where(which == k)[0]
            sed_lib[sel] = name
            if sel.size:
                index[sel], coeff[sel], params[sel] = fam.draw(z[sel], rng)
        return sed_lib, index, coeff, params

    def family(self, name):
        if name not in self.families:
            # Never build a stand-in: an SPS object rendered from another library is another galaxy.
            raise ValueError(f"SED family {name} is not among this run's families ({', '.join(self.names)})")
        return self.families[name]

    def rest_flux(self, pop, rows=None) -> np.ndarray:
        rows = np.arange(len(pop)) if rows is None else np.asarray(rows)
        out = np.empty((rows.size, self.wave.size))
        libs = pop.sed_lib[rows]
        for name in np.unique(libs):
            sel = np.where(libs == name)[0]
            r = rows[sel]
            out[sel] = self.family(str(name)).rest_flux(pop.sed_index[r], pop.sed_coeff[r], pop.sed_param[r])
        return out

    def header_cards(self) -> dict:
        """TRUTH header cards naming each family and its SED_PARAM columns."""
        from ...datamodel import KW_FAMILY_DATA, KW_FAMILY_NAME, KW_FAMILY_PARAMS
        cards = {}
        for k, (name, fam) in enumerate(self.families.items(), start=1):
            cards[f"{KW_FAMILY_NAME}{k:02d}"] = (name, "SED family")
            cards[f"{KW_FAMILY_PARAMS}{k:02d}"] = (",".join(fam.param_names) or "-", f"SED_PARAM of {name}"[:40])
            prov = fam.provenance()
            if prov:
                # A family built per run (the SPS library) names the data its objects came from.
                what = " ".join(f"{v[:16] if isinstance(v, str) else v}" for v in prov.values())
                cards[f"{KW_FAMILY_DATA}{k:02d}"] = (what, ",".join(p.split("_")[-1] for p in prov)[:30])
        return cards

    def provenance(self) -> dict:
        return {"families": self.spec(), **{n: f.provenance() for n, f in self.families.items() if f.provenance()}}


def as_family_set(sed_source) -> FamilySet:
    """A FamilySet for either a FamilySet or a bare SED library (its default families)."""
    return sed_source if isinstance(sed_source, FamilySet) else FamilySet(sed_source)
