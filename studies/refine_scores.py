"""The template refinement scored honestly: each family with a basis that does not contain it.

For each SED family (one nominal CSST-like test product each) the stage runs once with the
reference set (``csst-sls-z run``); its catalogue holds the network's estimate (Z_BNN) and the
refined one (Z), so both are scored on the same objects, by GI SNR bin, beside the true-SED
bound (the oracle fit of training/evaluate.py on the first ``--n-oracle`` objects). The basis:
SPS is scored with the set's own refinement file (the sedlib basis: REDROCK2016 + KCORRECT);
KCORRECT and REDROCK2016 each with a file built here without their templates
(``refine_basis.LEAVE_OUT``: the other family plus a PCA of an SPS library drawn with its own
seed), at the set's calibrated temperature. The instrument-shift sets (all families mixed) use
the set's own file, so half their galaxies are in its basis: read them as a check of the
intervals and of eta, not of sigma.

    python studies/refine_scores.py --refset reference_files/csst_sls_z_0007 --n 3000 --n-oracle 300 --out docs/refine_scores

writes ``refine_scores.json`` and ``refine_scores.md`` in ``--out``.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from studies.compare_reference_sets import read_truth, run_stage  # noqa: E402

log = logging.getLogger(__name__)
SNR_EDGES = (1.0, 1.5, 2.0, 3.0, 5.0, np.inf)
SNR_LABELS = ("1-1.5", "1.5-2", "2-3", "3-5", ">=5")


def _metrics(z, zt):
    from csst_sls_z.training.metrics import outlier_fraction, sigma_nmad
    ok = np.isfinite(zt)
    if ok.sum() < 3:
        return {"n": int(ok.sum()), "sigma_nmad": float("nan"), "eta": float("nan")}
    return {"n": int(ok.sum()), "sigma_nmad": sigma_nmad(z[ok], zt[ok]), "eta": outlier_fraction(z[ok], zt[ok])}


def windows_hold_truth(cat, header, model, zt) -> np.ndarray:
    """Per object: the true redshift within a refinement window (``training.pz_metrics.peak_recall``
    on the catalogue's PZ and Z_BNN): what no fit inside the windows can fix when False."""
    from csst_sls_z.pz import PzGrid
    from csst_sls_z.training.pz_metrics import peak_recall
    grid = PzGrid(z0=float(header["PZ_Z0"]), dz=float(header["PZ_DZ"]), nbin=int(header["PZ_NBIN"]),
                  space=str(header["PZ_SPACE"]).strip())
    return peak_recall(np.asarray(cat["PZ"], float), grid, np.asarray(cat["Z_BNN"], float), zt, model)


def score(cat, objid, zt, z_oracle=None, n_oracle=0, held=None):
    from csst_sls_z.datamodel import ZWarn
    from csst_sls_z.training.metrics import coverage
    order = np.argsort(cat["OBJID"])
    pos = order[np.searchsorted(cat["OBJID"], objid, sorter=order)]
    cat = cat[pos]
    z, z_bnn = np.asarray(cat["Z"], float), np.asarray(cat["Z_BNN"], float)
    snr = np.asarray(cat["SNR_GI"], float)
    failed = (np.asarray(cat["ZWARN"]) & int(ZWarn.REFINE_FAILED)) != 0
    rec = {"all": {"network": _metrics(z_bnn, zt), "refined": _metrics(z, zt)},
           "cov68": coverage(zt, np.asarray(cat["Z_LO"], float), np.asarray(cat["Z_HI"], float)),
           "refine_failed": float(failed.mean()), "bins": {}}
    for lo, hi, label in zip(SNR_EDGES[:-1], SNR_EDGES[1:], SNR_LABELS):
        sel = (snr >= lo) & (snr < hi)
        b = {"network": _metrics(z_bnn[sel], zt[sel]), "refined": _metrics(z[sel], zt[sel]),
             "cov68": coverage(zt[sel], np.asarray(cat["Z_LO"], float)[sel], np.asarray(cat["Z_HI"], float)[sel])
             if sel.any() else float("nan")}
        if z_oracle is not None:
            so = sel[:n_oracle]
            b["bound"] = _metrics(z_oracle[so], zt[:n_oracle][so])
        if held is not None:
            b["peak_recall"] = float(held[sel].mean()) if sel.any() else float("nan")
        rec["bins"][label] = b
    if held is not None:
        rec["peak_recall_snr3"] = float(held[snr >= 3].mean()) if (snr >= 3).any() else float("nan")
    for lo, label in ((3.0, ">=3"), (5.0, ">=5 ")):
        sel = snr >= lo
        rec["all"][f"network_snr{label.strip()}"] = _metrics(z_bnn[sel], zt[sel])
        rec["all"][f"refined_snr{label.strip()}"] = _metrics(z[sel], zt[sel])
        if z_oracle is not None:
            so = sel[:n_oracle]
            rec["all"][f"bound_snr{label.strip()}"] = _metrics(z_oracle[so], zt[:n_oracle][so])
    return rec


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--refset", type=Path, required=True, help="a reference set with a refinement file")
    p.add_argument("--families", default="SPS,KCORRECT,REDROCK2016")
    p.add_argument("--n", type=int, default=3000, help="objects per test set")
    p.add_argument("--seed", type=int, default=4711)
    p.add_argument("--sps-seed", type=int, default=990002, help="seed of the test SPS library")
    p.add_argument("--sps-library-n", type=int, default=3000)
    p.add_argument("--pca-seed", type=int, default=990003, help="seed of the SPS library of the leave-out PCA")
    p.add_argument("--n-oracle", type=int, default=300)
    p.add_argument("--no-shifts", action="store_true", help="skip the instrument-shift sets")
    p.add_argument("--refinement", type=Path, default=None,
                   help="a refinement file to use instead of the set's (its settings also go into the leave-out bases)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from csst_sls_z.reffiles.refinement import load_refinement, write_refinement
    from csst_sls_z.reffiles.sets import load_reference_set
    from csst_sls_z.simulation import SimOptions, load_models, simulate_products
    from csst_sls_z.simulation.families import FamilySet, parse_families
    from csst_sls_z.simulation.sps_library import build_sps_library, write_sps_library
    from csst_sls_z.training.baselines import oracle_redshifts
    from csst_sls_z.training.evaluate_generalisation import shifted_options
    from csst_sls_z.training.refine_basis import LEAVE_OUT, leave_out_model, sps_pca_vectors
    from csst_sls_z.simulation.population import Population
    instrument, sedlib, _ = load_models()
    refset = load_reference_set(args.refset, optional=("refinement",))
    if "refinement" not in refset.paths:
        raise SystemExit(f"{args.refset} has no refinement file")
    own_path = args.refinement or refset.path("refinement")
    own = load_refinement(own_path)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="refine_scores_", dir=args.out))
    t0 = time.time()
    lib = work / "sps_test_library.fits"
    write_sps_library(build_sps_library(args.sps_library_n, args.sps_seed, progress=False), lib)
    pca = None
    settings = {k: getattr(own, k) for k in own.__dataclass_fields__
                if k not in ("basis", "loglam", "libraries", "resolution", "dispersion", "centre", "basis_r", "bands")}
    names = list(parse_families(args.families))
    sets = [(n, FamilySet(sedlib, {n: None}, sps_library=lib), SimOptions(), n) for n in names]
    if not args.no_shifts:
        mix = FamilySet(sedlib, {n: None for n in names}, sps_library=lib)
        for param, sides in shifted_options(instrument["GI"].resolution).items():
            for side, opt in sides.items():
                sets.append((f"shift:{param}:{side}", mix, opt, None))
    results = {"args": {k: str(v) for k, v in vars(args).items()}, "temperature": own.temperature, "sets": {}}
    for k, (label, fams, opt, family) in enumerate(sets):
        d = work / f"set{k:02d}"
        d.mkdir()
        (product,) = simulate_products(args.n, args.seed + k, "test", args.n, d, instrument, fams, opt,
                                       overwrite=True, progress=False)
        objid, pop, flux, err = read_truth(product)
        options, basis = (("--override-refinement", str(own_path)) if args.refinement else ()), list(own.libraries)
        if family is not None and LEAVE_OUT[family]["sps_pca"]:
            if pca is None:
                pca = sps_pca_vectors(2000, args.pca_seed, 5, sedlib.wave)
            model = leave_out_model(family, sedlib, instrument, sps_vectors=pca, **settings)
            path = work / f"refinement_without_{family}.fits"
            write_refinement(path, model, "SIMULATION", overwrite=True,
                             history=[f"Leave-out basis for scoring {family}: {', '.join(model.libraries)}."])
            options, basis = ("--override-refinement", str(path)), list(model.libraries)
        cat = run_stage(args.refset, product, d / "out.fits", seed=0, options=options)
        import fitsio
        order = np.argsort(objid)
        zt_cat = pop.z[order[np.searchsorted(objid, cat["OBJID"], sorter=order)]]
        held_cat = windows_hold_truth(cat, fitsio.read_header(d / "out.fits", ext="SLS_REDSHIFT"), own, zt_cat)
        held = np.empty(len(objid), bool)        # in the truth's order, as score() reads it
        held[order[np.searchsorted(objid, cat["OBJID"], sorter=order)]] = held_cat
        z_or, n_or = None, 0
        if family is not None and args.n_oracle > 0:
            n_or = min(args.n_oracle, len(pop))
            sub = Population(**{f: getattr(pop, f)[:n_or] for f in pop.__dict__})
            z_or = oracle_redshifts(sub, flux[:n_or], err[:n_or], instrument, fams, 1.6, progress=False)
        rec = score(cat, objid, pop.z, z_or, n_or, held)
        rec["basis"] = basis
        results["sets"][label] = rec
        a = rec["all"]
        log.info("%s (basis %s): SNR>=3 sigma %.4f -> %.4f, eta %.3f -> %.3f; cov68 %.3f", label, basis,
                 a["network_snr>=3"]["sigma_nmad"], a["refined_snr>=3"]["sigma_nmad"],
                 a["network_snr>=3"]["eta"], a["refined_snr>=3"]["eta"], rec["cov68"])
    results["wall_s"] = time.time() - t0
    (args.out / "refine_scores.json").write_text(json.dumps(results, indent=1, default=float))
    (args.out / "refine_scores.md").write_text(markdown(results))
    shutil.rmtree(work, ignore_errors=True)
    print(markdown(results))
    return 0


def markdown(results) -> str:
    def f(m, key="sigma_nmad"):
        v = m.get(key, float("nan")) if m else float("nan")
        return "-" if not np.isfinite(v) else (f"{v:.4f}" if key == "sigma_nmad" else f"{100 * v:.1f}%")
    L = [f"Refined posterior temperature {results['temperature']:.3g}. sigma_NMAD / eta (|dz|/(1+z) > 0.02): "
         "network (Z_BNN) -> refined (Z), and the true-SED bound on the first objects.", ""]
    L.append("| set | basis | GI SNR >= 3: network -> refined (bound) | >= 5 | eta at >= 3 | cov68 | REFINE_FAILED "
             "| peak recall, SNR >= 3 |")
    L.append("|---|---|---|---|---|---|---|---|")
    for label, r in results["sets"].items():
        a = r["all"]
        L.append(f"| {label} | {'+'.join(r['basis'])} | {f(a['network_snr>=3'])} -> **{f(a['refined_snr>=3'])}** "
                 f"({f(a.get('bound_snr>=3'))}) | {f(a['network_snr>=5'])} -> {f(a['refined_snr>=5'])} "
                 f"({f(a.get('bound_snr>=5'))}) | {f(a['network_snr>=3'], 'eta')} -> {f(a['refined_snr>=3'], 'eta')} "
                 f"| {r['cov68']:.3f} | {100 * r['refine_failed']:.1f}% | {100 * r.get('peak_recall_snr3', np.nan):.1f}% |")
    L.append("")
    L.append("By GI SNR bin (sigma_NMAD network -> refined (bound); eta network -> refined (bound); refined cov68; "
             "peak recall: the truth within a refinement window):")
    L.append("")
    L.append("| set | " + " | ".join(SNR_LABELS) + " |")
    L.append("|---|" + "---|" * len(SNR_LABELS))
    for label, r in results["sets"].items():
        cells = []
        for b in SNR_LABELS:
            x = r["bins"][b]
            cells.append(f"{f(x['network'])} -> {f(x['refined'])} ({f(x.get('bound'))}); "
                         f"{f(x['network'], 'eta')} -> {f(x['refined'], 'eta')} ({f(x.get('bound'), 'eta')}); "
                         f"{x['cov68']:.2f}; {100 * x.get('peak_recall', np.nan):.0f}%")
        L.append(f"| {label} | " + " | ".join(cells) + " |")
    L.append("")
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
