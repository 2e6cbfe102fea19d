"""The two families held in the ``sedlib`` reference file, each a mixture of 5 basis spectra.

* ``REDROCK2016``: the DESI Redrock 2016 galaxy PCA basis with its 750 archetype
  coefficient vectors (BSD-3, DESI Collaboration).
* ``KCORRECT``: the 5 kcorrect v4 templates (Blanton & Roweis 2007) with mixtures fitted to
  SDSS galaxies.

SED_COEFF holds the 5 coefficients; SED_PARAM is unused (NaN).
"""
from __future__ import annotations

import numpy as np

from . import SEDFamily


class _BasisFamily(SEDFamily):
    param_names = ()

    def __init__(self, sedlib, **_options):
        self.sedlib = sedlib

    def draw(self, z, rng):
        pool = self.sedlib.coeffs[self.name]
        index = rng.integers(0, pool.shape[0], z.size).astype(np.int32)
        _, params = self.blank(z.size)
        return index, pool[index], params

    def rest_flux(self, index, coeff, params):
        return self.sedlib.spectra(self.name, coeff)


class Redrock2016Family(_BasisFamily):
    name = "REDROCK2016"
    # Bluer, ELG-rich; 1 : 4 with KCORRECT, as the paper's BOSS-heavy sample.
    default_weight = 0.2


class KcorrectFamily(_BasisFamily):
    name = "KCORRECT"
    default_weight = 0.8
