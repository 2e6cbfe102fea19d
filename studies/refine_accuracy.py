"""Accuracy of the template refinement (``csst_sls_z.refine``) against the network, on a simulated product.

Inputs: a simulated product with TRUTH and the stage's output for it (its Z and PZ columns, SNR_GI);
e.g. (a few minutes of CPU on two cores):

    csst-sls-z simulate --n 1000 --seed 777 --population test --per-file 1000 \\
        --families SPS:0.5,KCORRECT:0.3,REDROCK2016:0.2 --out /tmp/refsim
    csst-sls-z run /tmp/refsim/sim_test_s777_0000.fits -o /tmp/refout
    python studies/refine_accuracy.py /tmp/refsim/sim_test_s777_0000.fits /tmp/refout/sim_test_s777_0000_slsz.fits

Printed (markdown), with the project's metrics (``training.metrics``: sigma_NMAD and eta, |dz|/(1+z) > 0.02):

* by GI SNR bin: the network's Z, the refined Z with the default model (the sedlib basis: REDROCK2016 +
  KCORRECT) and with the note's full method (every width at every coarse z, fine 1e-4 over +-0.004);
* by family, each scored with a basis that excludes it (``training.refine_basis.LEAVE_OUT``: SPS with
  the sedlib basis; KCORRECT with REDROCK2016 + an SPS PCA; REDROCK2016 with KCORRECT + an SPS PCA),
  beside the default basis (which holds the KCORRECT and REDROCK2016 templates: flattering);
* the simplifications one at a time (each default setting set back to the note's value), so the cost
  of each is measured: sigma_NMAD and eta at GI SNR >= 3 and overall, chi2 evaluations per object;
* intervals: the temperature fitted on the even objects, the 68% coverage on the odd ones, against
  the network's Z_LO/Z_HI;
* speed: spectra/s of the default model and of the full method, one thread.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SNR_BINS = ((0, np.inf, "all"), (0, 1, "0-1"), (1, 2, "1-2"), (2, 3, "2-3"), (3, 5, "3-5"), (5, np.inf, ">= 5"),
            (3, np.inf, ">= 3"))


def metrics(z, zt, sel):
    from csst_sls_z.training.metrics import outlier_fraction, sigma_nmad
    if not sel.any():
        return "-"
    return f"{sigma_nmad(z[sel], zt[sel]):.4f} / {100 * outlier_fraction(z[sel], zt[sel]):.1f}%"


def run(args):
    from astropy.io import fits
    from csst_sls_z import refine as R
    from csst_sls_z.products.reader import open_product
    from csst_sls_z.pz import PzGrid
    from csst_sls_z.simulation import load_models
    from csst_sls_z.training.refine_basis import build_refinement_model, leave_out_model, sps_pca_vectors
    from csst_sls_z.training.refine_calibration import coverage, fit_temperature
    from benchmarks.bench_refine import FULL_METHOD

    instrument, sedlib, _ = load_models(args.reference_dir)
    truth = fits.getdata(args.product, "TRUTH")
    with fits.open(args.catalog) as hdul:
        tab = hdul["SLS_REDSHIFT"].data
        grid = PzGrid.from_header(hdul["SLS_REDSHIFT"].header)
        pz = np.asarray(tab["PZ"], float)
        z_net = np.asarray(tab["Z"], float)
        snr = np.asarray(tab["SNR_GI"], float)
        objid = np.asarray(tab["OBJID"])
        net_lo, net_hi = np.asarray(tab["Z_LO"], float), np.asarray(tab["Z_HI"], float)
    order = {o: k for k, o in enumerate(np.asarray(truth["OBJID"]))}
    rows = np.array([order[o] for o in objid])
    zt = np.asarray(truth["Z_TRUE"], float)[rows]
    fam = np.char.strip(np.asarray(truth["SED_LIB"]).astype(str))[rows]
    with open_product(args.product) as reader:
        chunks = list(reader.iter_chunks(args.chunk_size, prefetch=False))
    if not np.array_equal(reader.objid, objid):
        raise SystemExit("the catalogue's objects are not the product's, in its order")

    def refine(model, threads=1):
        parts = []
        t0 = time.perf_counter()
        for sl, bands in chunks:
            parts.append(R.refine(bands, pz[sl], grid, z_net[sl], model, threads=threads))
        return R.concatenate(parts), time.perf_counter() - t0

    default = build_refinement_model(sedlib, instrument)
    refine(default.replace())            # warm-up (numba cache)
    out = {}
    res_def, t_def = refine(default)
    res_full, t_full = refine(default.replace(**FULL_METHOD))
    n = zt.size
    lines = [f"{n} objects; GI SNR bins from the stage's SNR_GI; sigma_NMAD / eta (|dz|/(1+z) > 0.02)", "",
             "| GI SNR | n | network Z | refined (default) | refined (note's full method) |",
             "|---|---|---|---|---|"]
    for lo, hi, label in SNR_BINS:
        sel = (snr >= lo) & (snr < hi)
        lines.append(f"| {label} | {sel.sum()} | {metrics(z_net, zt, sel)} | {metrics(res_def.z, zt, sel)} | "
                     f"{metrics(res_full.z, zt, sel)} |")
    lines += ["", f"status (default): ok {np.sum(res_def.status == 0)}, not run {np.sum(res_def.status == 1)}, "
                  f"on a window edge {np.sum(res_def.status == 2)}",
              f"speed, one thread: default {n / t_def:,.0f} spectra/s ({res_def.evaluations.mean():.1f} evaluations "
              f"an object), full method {n / t_full:,.0f} spectra/s ({res_full.evaluations.mean():.0f}); "
              f"ratio {t_full / t_def:.1f}"]
    out["default"], out["full"] = res_def, res_full

    # -- by family, each with a basis that excludes it
    sps_vec = sps_pca_vectors(args.sps_n, args.sps_seed, args.sps_vectors, sedlib.wave)
    rich = build_refinement_model(sedlib, instrument, extra_vectors=sps_vec)
    res_rich, t_rich = refine(rich)
    out["rich"] = res_rich
    lines += ["", "By family, each with a basis that excludes it (the default basis holds KCORRECT and "
                  "REDROCK2016; the richer one adds a PCA of SPS spectra from another library seed):", "",
              "| family (basis without it) | GI SNR | n | network Z | refined, default basis | "
              "refined, basis without the family | refined, default + SPS PCA |",
              "|---|---|---|---|---|---|---|"]
    for family in ("SPS", "KCORRECT", "REDROCK2016"):
        sel_f = fam == family
        if not sel_f.any():
            continue
        model = leave_out_model(family, sedlib, instrument, sps_vectors=sps_vec)
        res_lo, _ = refine(model)
        out[f"leave_out_{family}"] = res_lo
        for lo, hi, label in ((0, np.inf, "all"), (3, np.inf, ">= 3"), (5, np.inf, ">= 5")):
            sel = sel_f & (snr >= lo) & (snr < hi)
            lines.append(f"| {family} ({'+'.join(model.libraries)}) | {label} | {sel.sum()} | "
                         f"{metrics(z_net, zt, sel)} | {metrics(res_def.z, zt, sel)} | {metrics(res_lo.z, zt, sel)} | "
                         f"{metrics(res_rich.z, zt, sel)} |")
    lines += ["", f"the default + SPS PCA basis ({rich.n_vectors} vectors): {n / t_rich:,.0f} spectra/s, one thread"]

    # -- the simplifications one at a time
    steps = [("default", {}),
             ("coarse scan at 1e-3 (not 2e-3)", {"coarse_step": 1e-3}),
             ("coarse scan on native pixels (not pairs)", {"coarse_bin": 1}),
             ("every width at every coarse z (not W = 8 px then a profile)", {"coarse_width": -1}),
             ("fine scan 1e-4 over +-0.004 (not 5e-4 over +-0.001 + 2 parabolas)",
              {"fine_step": 1e-4, "fine_half": 4e-3, "parabola_steps": 1}),
             ("second minimum always re-examined (not within 25)", {"minimum_margin": 1e30}),
             ("widths profiled at both minima (not the best)", {"profile_minima": 2}),
             ("widths profiled once (not again at the fine minimum)", {"profile_rounds": 1}),
             ("the note's full method", FULL_METHOD)]
    hi3 = snr >= 3
    lines += ["", "Each simplification undone alone (sigma_NMAD / eta):", "",
              "| variant | all | GI SNR >= 3 | evaluations an object | |d ln(1+z)| from full, SNR >= 3: median, 90% |",
              "|---|---|---|---|---|"]
    for label, change in steps:
        r = res_def if not change else (res_full if change is FULL_METHOD else refine(default.replace(**change))[0])
        d = np.abs(np.log1p(r.z) - np.log1p(res_full.z))[hi3]
        lines.append(f"| {label} | {metrics(r.z, zt, np.ones(n, bool))} | {metrics(r.z, zt, hi3)} | "
                     f"{r.evaluations[r.status != 1].mean():.1f} | "
                     f"{np.nanmedian(d):.1e}, {np.nanpercentile(d, 90):.1e} |")

    # -- intervals: T fitted on the even objects, coverage on the odd ones
    even, odd = np.arange(0, n, 2), np.arange(1, n, 2)
    t_fit = fit_temperature(res_def.subset(even), zt[even])
    ran_odd = odd[res_def.status[odd] != 1]
    cov_1 = coverage(res_def, zt, 1.0, rows=ran_odd)
    cov_t = coverage(res_def, zt, t_fit, rows=ran_odd)
    cov_net = float(np.mean((net_lo[ran_odd] <= zt[ran_odd]) & (zt[ran_odd] <= net_hi[ran_odd])))
    iv = R.intervals(res_def, t_fit)
    zerr_net = 0.5 * (net_hi - net_lo)
    lines += ["", f"Intervals: T fitted on the {even.size} even objects = {t_fit:.3g}; 68% coverage on the odd "
                  f"ones: T = 1 {cov_1:.3f}, fitted T {cov_t:.3f}, the network's Z_LO/Z_HI {cov_net:.3f}; "
                  f"median ZERR/(1+z) refined {np.nanmedian(iv['ZERR'][odd] / (1 + zt[odd])):.4f}, network "
                  f"{np.nanmedian(zerr_net[odd] / (1 + zt[odd])):.4f}"]
    return "\n".join(lines), out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("product", help="simulated product with TRUTH")
    parser.add_argument("catalog", help="the stage's output for it")
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--reference-dir", default=None)
    parser.add_argument("--sps-n", type=int, default=2000, help="SPS spectra for the PCA (default 2000)")
    parser.add_argument("--sps-seed", type=int, default=1, help="its library seed (the simulator's default is 0)")
    parser.add_argument("--sps-vectors", type=int, default=5, help="SPS PCA vectors (default 5)")
    args = parser.parse_args(argv)
    text, _ = run(args)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
