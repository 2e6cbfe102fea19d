"""``SPS``: stellar-population galaxies with nebular emission drawn on their own.

The continuum and the line ratios come from a library built once per regeneration
(sps_library.py: BC03 stellar populations under five star-formation histories, Calzetti
dust with extra dust around young stars, BPT-scattered line ratios with 5-15% AGN and
LINERs). This family adds what depends on the object, not the library:

* only library entries younger than the universe at the object's z are drawn;
* EW(H-alpha) is drawn independently of the continuum, log-normal about
  EW_HALPHA_Z0 (1 + z)^1.8 A (Fumagalli et al. 2012), EW_HALPHA_DEX wide, clipped at
  EW_HALPHA_MAX, with a fraction EW_WEAK_FRACTION nearly line-free (0-EW_WEAK_MAX A);
  every other line follows from the entry's ratios to H-alpha.

The library comes from, in order: ``sps_library`` (an SPSLibrary or the path of one written
by ``write_sps_library``), else a library of ``sps_n`` entries built with ``sps_seed``.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np

from . import FamilyUnavailable, SEDFamily

log = logging.getLogger(__name__)

EW_HALPHA_Z0 = 20.0        # Angstrom, median rest-frame EW(H-alpha) of line emitters at z = 0
EW_HALPHA_SLOPE = 1.8      # EW proportional to (1 + z)^1.8 (Fumagalli et al. 2012)
EW_HALPHA_DEX = 0.4        # log-normal width
EW_HALPHA_MAX = 1000.0
EW_WEAK_FRACTION = 0.2
EW_WEAK_MAX = 3.0
DEFAULT_LIBRARY_SIZE = 3000
MIN_FORMATION_GYR = 0.3    # the first galaxies: the oldest entry drawn at z is t_universe(z) - this


@functools.lru_cache(maxsize=1)
def _age_table():
    from astropy.cosmology import Planck18
    z = np.linspace(0.0, 3.0, 301)
    return z, np.asarray(Planck18.age(z).to_value("Gyr"))


def universe_age_gyr(z):
    zz, age = _age_table()
    return np.interp(z, zz, age)


class SPSFamily(SEDFamily):
    name = "SPS"
    param_names = ("SFH_TYPE", "AGE_GYR", "METAL_ZSUN", "AV_STARS", "D4000", "LOG_N2HA", "LOG_O3HB", "EW_HA")
    default_weight = 1.0

    def __init__(self, sedlib, sps_library=None, sps_n: int = DEFAULT_LIBRARY_SIZE, sps_seed: int = 0, **_options):
        from .. import sps_library as sps
        try:
            if sps_library is None:
                log.info("building an SPS library of %d entries (seed %d); pass a saved one to skip this",
                         sps_n, sps_seed)
                lib = sps.build_sps_library(sps_n, sps_seed)
            elif isinstance(sps_library, (str, Path)):
                lib = sps.load_sps_library(sps_library)
            else:
                lib = sps_library
        except sps.SPSUnavailable as exc:
            raise FamilyUnavailable(str(exc)) from None
        if lib.wave.size != sedlib.wave.size or not np.allclose(lib.wave, sedlib.wave, rtol=1e-9):
            raise ValueError("the SPS library's rest grid differs from the SED library's; rebuild it")
        self.lib = lib
        self.lines = sps.line_basis(lib.wave)
        self.ages = lib.param("age_gyr")
        self._cols = [lib.param_names.index(n) for n in
                      ("sfh_type", "age_gyr", "metallicity", "av_stars", "d4000", "log_nii_ha", "log_oiii_hb")]
        self._ew_scale = lib.param("ew_halpha_scale")

    def draw(self, z, rng):
        n = z.size
        # Rows are sorted by age: entries [0, k) are young enough for the universe at z.
        k = np.searchsorted(self.ages, universe_age_gyr(z) - MIN_FORMATION_GYR, side="right")
        k = np.clip(k, 1, self.ages.size)
        index = np.minimum((rng.random(n) * k).astype(np.int64), k - 1).astype(np.int32)
        ew = 10 ** rng.normal(np.log10(EW_HALPHA_Z0 * (1 + z) ** EW_HALPHA_SLOPE), EW_HALPHA_DEX)
        weak = rng.random(n) < EW_WEAK_FRACTION
        ew = np.where(weak, rng.uniform(0.0, EW_WEAK_MAX, n), np.minimum(ew, EW_HALPHA_MAX))
        coeff, params = self.blank(n)
        params[:, :7] = self.lib.params[index][:, self._cols]
        params[:, 7] = ew * self._ew_scale[index]
        return index, coeff, params

    def rest_flux(self, index, coeff, params):
        index = np.asarray(index, int)
        line_flux = params[:, 7] * self.lib.cont_halpha[index]          # F(H-alpha) = EW x continuum
        return (self.lib.continuum[index].astype(np.float64)
                + (line_flux[:, None] * self.lib.line_ratio[index]) @ self.lines)

    def provenance(self) -> dict:
        return {"library_sha256": self.lib.sha256(), "library_seed": int(self.lib.seed), "library_n": len(self.lib)}
