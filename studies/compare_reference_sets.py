"""Reference sets side by side on the same spectra, family by family, FITS in to FITS out.

For each SED family (one nominal CSST-like test product each, simulated once) and for the
instrument shifts of evaluate_generalisation (all training families mixed), every reference
set given runs the stage (``csst-sls-z run``) on the same file, and its catalog is scored
against TRUTH. Beside each family: the information bound (the oracle fit with each
object's true SED and shape, training/evaluate.py) on its first ``--n-oracle`` objects.

The SPS family is drawn from a library built here with its own seed (``--sps-seed``), so
its galaxies are not those of any regeneration's library.

    python studies/compare_reference_sets.py --refsets reference_files/csst_sls_z_0003 \\
        reference_files/csst_sls_z_0004 --n 3000 --out docs/compare

writes ``compare.json`` and ``compare.md`` in ``--out``. ``--variant NAME "OPTIONS"`` also runs
every set with those stage options (a column ``<set>+NAME``), for example the bfloat16
backbone:

    python studies/compare_reference_sets.py --refsets reference_files/csst_sls_z_0006 \
        --variant bf16 "--backbone-precision bfloat16" --n 3000 --n-oracle 0 --out docs/compare_bf16
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

log = logging.getLogger(__name__)

Z_WINDOW = (0.5, 0.9)     # the window where the foreign family failed (design notes on galaxies)
HIGH_SNR = 3.0


def read_truth(path):
    from astropy.io import fits
    from csst_sls_z.simulation.population import Population
    with fits.open(path) as hdul:
        t = hdul["TRUTH"].data
        pop = Population(z=np.asarray(t["Z_TRUE"], float), mag=np.asarray(t["MAG_NORM"], float),
                         r_eff=np.asarray(t["R_EFF"], float), sersic_n=np.asarray(t["SERSIC_N"], float),
                         axis_ratio=np.asarray(t["AXIS_RATIO"], float), pa=np.asarray(t["PA"], float),
                         sed_lib=np.asarray(t["SED_LIB"]).astype(str), sed_index=np.asarray(t["SED_INDEX"]),
                         sed_coeff=np.asarray(t["SED_COEFF"], float), sed_param=np.asarray(t["SED_PARAM"], float))
        spec = [hdul[f"SPEC_{b}"].data for b in ("GV", "GI")]
        flux = np.concatenate([np.asarray(s["FLUX"], float) for s in spec], axis=1)
        err = np.concatenate([np.asarray(s["ERR"], float) for s in spec], axis=1)
        objid = np.asarray(t["OBJID"])
    return objid, pop, flux, err


def score(cat, objid, zt):
    from csst_sls_z.training.evaluate_generalisation import _flags
    from csst_sls_z.training.metrics import coverage, outlier_fraction, sigma_nmad
    order = np.argsort(cat["OBJID"])
    pos = order[np.searchsorted(cat["OBJID"], objid, sorter=order)]
    if not np.array_equal(cat["OBJID"][pos], objid):
        raise RuntimeError("the catalog lost objects")
    z = np.asarray(cat["Z"], float)[pos]
    snr = np.asarray(cat["SNR_GI"], float)[pos]
    zwarn = np.asarray(cat["ZWARN"])[pos]
    hi = snr > HIGH_SNR
    win = hi & (zt > Z_WINDOW[0]) & (zt < Z_WINDOW[1])
    rec = {"n": int(zt.size), "sigma_nmad": sigma_nmad(z, zt), "eta": outlier_fraction(z, zt),
           "eta_snr3": outlier_fraction(z[hi], zt[hi]) if hi.any() else float("nan"),
           "n_snr3": int(hi.sum()),
           "eta_snr3_z0509": outlier_fraction(z[win], zt[win]) if win.any() else float("nan"),
           "n_snr3_z0509": int(win.sum()),
           "cov68": coverage(zt, np.asarray(cat["Z_LO"])[pos], np.asarray(cat["Z_HI"])[pos]),
           "eta_cnn": outlier_fraction(np.asarray(cat["Z_CNN"], float)[pos], zt)}
    rec.update(_flags(zwarn, z, zt))
    return rec


def run_stage(refset, product, out, seed, options=()):
    from csst_sls_z.stage_cli import main as run_main
    import fitsio
    code = run_main([str(product), "-o", str(out), "--reference-dir", str(refset), "--catalog-only",
                     "--no-progress", "--seed", str(seed), "--overwrite", "--log-level", "WARNING", *options])
    if code != 0:
        raise RuntimeError(f"the stage failed on {product} with {refset} (exit {code})")
    return fitsio.read(out, ext="SLS_REDSHIFT")


def oracle(pop, flux, err, instrument, families, n):
    from csst_sls_z.simulation.population import Population
    from csst_sls_z.training.baselines import oracle_redshifts, point_metrics
    n = min(n, len(pop))
    sub = Population(**{k: getattr(pop, k)[:n] for k in pop.__dict__})
    z_or = oracle_redshifts(sub, flux[:n], err[:n], instrument, families, 1.6, progress=False)
    zt = pop.z[:n]
    rec = point_metrics(z_or, zt)
    return rec


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--refsets", nargs="+", required=True, help="reference set directories")
    p.add_argument("--families", default="REDROCK2016,KCORRECT,SPS")
    p.add_argument("--n", type=int, default=3000, help="objects per test set")
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--sps-seed", type=int, default=990001, help="seed of the test SPS library")
    p.add_argument("--sps-library-n", type=int, default=5000)
    p.add_argument("--n-oracle", type=int, default=200)
    p.add_argument("--no-shifts", action="store_true", help="skip the instrument-shift sets")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--variant", nargs=2, action="append", default=[], metavar=("NAME", "OPTIONS"),
                   help="also run every set with these stage options (quoted), as column <set>+NAME")
    p.add_argument("--keep-products", action="store_true",
                   help="keep the simulated products and the outputs (a temporary folder in --out); default: removed")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from csst_sls_z.simulation import SimOptions, load_models, simulate_products
    from csst_sls_z.simulation.families import FamilySet, parse_families
    from csst_sls_z.training.evaluate_generalisation import shifted_options
    instrument, sedlib, _ = load_models()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="compare_", dir=args.out))
    names = list(parse_families(args.families))
    runs = {Path(r).name: (r, ()) for r in args.refsets}
    for vname, vopts in args.variant:
        runs.update({f"{Path(r).name}+{vname}": (r, tuple(vopts.split())) for r in args.refsets})
    options = {}
    if "SPS" in names:
        from csst_sls_z.simulation.sps_library import build_sps_library, write_sps_library
        lib = work / "sps_test_library.fits"
        write_sps_library(build_sps_library(args.sps_library_n, args.sps_seed, progress=False), lib)
        options["sps_library"] = lib
    sets = [(name, FamilySet(sedlib, {name: None}, **options), SimOptions()) for name in names]
    if not args.no_shifts:
        mix = FamilySet(sedlib, {n: None for n in names}, **options)
        for param, sides in shifted_options(instrument["GI"].resolution).items():
            for side, opt in sides.items():
                sets.append((f"shift:{param}:{side}", mix, opt))
    results = {"args": {k: str(v) for k, v in vars(args).items()}, "sets": {}}
    t0 = time.time()
    for k, (label, fams, opt) in enumerate(sets):
        d = work / f"set{k:02d}"
        d.mkdir()
        (product,) = simulate_products(args.n, args.seed + k, "test", args.n, d, instrument, fams, opt,
                                       overwrite=True, progress=False)
        objid, pop, flux, err = read_truth(product)
        rec = {"families": fams.spec()}
        cats = {name: run_stage(r, product, d / f"{name}.fits", seed=0, options=opts)
                for name, (r, opts) in runs.items()}
        for name, cat in cats.items():
            rec[name] = score(cat, objid, pop.z)
            if "+" in name:            # a variant against its set's default run, object by object
                base = cats[name.split("+")[0]]
                if not np.array_equal(base["OBJID"], cat["OBJID"]):
                    raise RuntimeError("a variant's catalog is not in its set's object order")
                dz = np.abs(np.asarray(cat["Z"], float) - base["Z"]) / (1.0 + np.asarray(base["Z"], float))
                dz = dz[np.isfinite(dz)]
                rec[name]["vs_default"] = {"median_dz": float(np.median(dz)), "p99_dz": float(np.percentile(dz, 99)),
                                           "moved_over_0.01": float(np.mean(dz > 0.01)),
                                           "zwarn_differs": float(np.mean(cat["ZWARN"] != base["ZWARN"]))}
        if not label.startswith("shift:") and args.n_oracle > 0:
            n_or = min(args.n_oracle, len(pop))
            rec["oracle"] = oracle(pop, flux, err, instrument, fams, n_or)
            for name, cat in cats.items():
                # Each set on the oracle's own objects: a like-for-like comparison with the bound.
                sub = score(cat[np.isin(cat["OBJID"], objid[:n_or])], objid[:n_or], pop.z[:n_or])
                rec[name]["oracle_subset"] = {"eta": sub["eta"], "sigma_nmad": sub["sigma_nmad"]}
        results["sets"][label] = rec
        log.info("%s: %s", label, json.dumps({r: {m: round(rec[r][m], 4) for m in ("eta", "eta_snr3_z0509", "cov68")}
                                              for r in runs}))
    results["wall_s"] = time.time() - t0
    (args.out / "compare.json").write_text(json.dumps(results, indent=1))
    (args.out / "compare.md").write_text(markdown(results, list(runs)))
    if not args.keep_products:
        shutil.rmtree(work, ignore_errors=True)
    print(markdown(results, list(runs)))
    return 0


def markdown(results, names) -> str:
    def f(x, pct=True):
        return "-" if x is None or not np.isfinite(x) else (f"{100 * x:.1f}%" if pct else f"{x:.4f}")
    head = ("| test set | " + " | ".join(f"{n}: eta / eta SNR>3, 0.5<z<0.9 / sigma_NMAD / cov68 / kept / eta kept"
                                         for n in names) + " | bound (oracle): eta / sigma_NMAD |")
    rows = [head, "|" + "---|" * (len(names) + 2)]
    for label, rec in results["sets"].items():
        cells = []
        for n in names:
            r = rec[n]
            cells.append(f"{f(r['eta'])} / {f(r['eta_snr3_z0509'])} (n={r['n_snr3_z0509']}) / {f(r['sigma_nmad'], False)}"
                         f" / {f(r['cov68'], False)} / {f(r['kept'])} / {f(r['eta_kept'])}")
        o = rec.get("oracle")
        bound = f"{f(o['eta'])} / {f(o['sigma_nmad'], False)}" if o else "-"
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {bound} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.exit(main())
