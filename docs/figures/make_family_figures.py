"""Figures and numbers of docs/simulation.md's "SED families and instrument variations" section.

    python docs/figures/make_family_figures.py --n 6000 --sps-n 5000 --out docs/figures

* families_bpt.png: the SPS population on the BPT diagram with the Kauffmann et al. 2003
  and Kewley et al. 2001 lines;
* families_ew_d4000.png: EW(H-alpha) and D4000 per family, measured the same way on every
  family's rest-frame SEDs (the objects as drawn, lines included);
* families_mag_z.png: magnitude against z for the CSST-like test population;
* families_examples.png: one GI+GV spectrum per family against its noiseless model.

Prints the numbers the docs quote (markdown).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MIX = "SPS:0.5,KCORRECT:0.3,REDROCK2016:0.2"


def ew_halpha(wave, flux):
    """Rest-frame EW(H-alpha) in A: line window 6557-6572 A over a continuum from 6490-6530 and 6600-6640 A."""
    side = ((wave > 6490) & (wave < 6530)) | ((wave > 6600) & (wave < 6640))
    line = (wave > 6557) & (wave < 6572)
    cont = flux[:, side].mean(axis=1)
    dl = np.gradient(wave)[line]
    return ((flux[:, line] - cont[:, None]) * dl[None, :]).sum(axis=1) / np.maximum(cont, 1e-30)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=6000)
    p.add_argument("--sps-n", type=int, default=5000)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = p.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from csst_sls_z.simulation import FamilySet, load_models, simulate_arrays
    from csst_sls_z.simulation.sps_library import bpt_kauffmann, bpt_kewley, build_sps_library, d4000
    instrument, sedlib, _ = load_models()
    lib = build_sps_library(args.sps_n, args.seed)
    fams = FamilySet(sedlib, MIX, sps_library=lib)
    sim = simulate_arrays(args.n, args.seed, "test", instrument, fams)
    pop = sim.population
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"`python docs/figures/make_family_figures.py --n {args.n} --sps-n {args.sps_n} --seed {args.seed} "
          f"--out {args.out}`\n")

    # BPT
    sps = np.where(pop.sed_lib == "SPS")[0]
    lp = lib.param_names
    cls = lib.params[pop.sed_index[sps], lp.index("excitation_class")]
    x, y = pop.sed_param[sps, 5], pop.sed_param[sps, 6]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for c, label, col in ((0, "star-forming", "tab:blue"), (1, "Seyfert 2", "tab:red"), (2, "LINER", "tab:orange")):
        s = cls == c
        ax.scatter(x[s], y[s], s=3, c=col, label=f"{label} ({100 * s.mean():.1f}%)")
    xx = np.linspace(-2.2, 0.0, 200)
    ax.plot(xx, bpt_kauffmann(xx), "k--", lw=1, label="Kauffmann et al. 2003")
    xk = np.linspace(-2.2, 0.4, 200)
    ax.plot(xk, bpt_kewley(xk), "k-", lw=1, label="Kewley et al. 2001 (maximum starburst)")
    ax.set(xlim=(-2.2, 0.7), ylim=(-1.5, 1.5), xlabel="log [NII] 6584 / H-alpha", ylabel="log [OIII] 5007 / H-beta",
           title=f"SPS family: {sps.size} objects of a test population")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(args.out / "families_bpt.png", dpi=110)
    plt.close(fig)
    sf = cls == 0
    below = y[sf] < bpt_kewley(x[sf])
    print(f"- SPS objects: {sps.size}; star-forming {100 * sf.mean():.1f}%, all below the Kewley line: "
          f"{bool(below.all())}; Seyfert 2 {100 * np.mean(cls == 1):.1f}%, LINER {100 * np.mean(cls == 2):.1f}%.")

    # EW(H-alpha), D4000 per family
    rest = fams.rest_flux(pop)
    ew = ew_halpha(fams.wave, rest)
    dn = d4000(fams.wave, rest)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    print("\n| family | objects | EW(H-alpha) median [10%, 90%] / A | D4000 median [10%, 90%] |\n|---|---|---|---|")
    for name in fams.names:
        s = pop.sed_lib == name
        axes[0].hist(np.log10(np.clip(ew[s], 0.1, None)), bins=60, range=(-1, 3.2), histtype="step", label=name,
                     density=True)
        axes[1].hist(dn[s], bins=60, range=(0.7, 2.4), histtype="step", label=name, density=True)
        q = lambda v: f"{np.median(v):.2f} [{np.percentile(v, 10):.2f}, {np.percentile(v, 90):.2f}]"  # noqa: E731
        print(f"| {name} | {s.sum()} | {q(ew[s])} | {q(dn[s])} |")
    axes[0].set(xlabel="log10 EW(H-alpha) / A (rest, measured on the SED; floor 0.1)", ylabel="density")
    axes[1].set(xlabel="D4000 (Balogh et al. 1999, narrow)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "families_ew_d4000.png", dpi=110)
    plt.close(fig)

    # magnitude vs z
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.hexbin(pop.z, pop.mag, gridsize=45, bins="log", cmap="Greys")
    sel = (pop.z > 0.4) & (pop.z < 0.6)
    ax.set(xlabel="z", ylabel="MAG_NORM (AB, GI grating)",
           title=f"std at 0.4 < z < 0.6: {pop.mag[sel].std():.2f} mag")
    fig.tight_layout()
    fig.savefig(args.out / "families_mag_z.png", dpi=110)
    plt.close(fig)
    print(f"\n- Magnitude standard deviation at 0.4 < z < 0.6: {pop.mag[sel].std():.2f} mag ({sel.sum()} objects).")

    # one example spectrum per family (the brightest-in-GI of each at 0.3 < z < 0.9)
    fig, axes = plt.subplots(len(fams.names), 1, figsize=(10, 2.6 * len(fams.names)))
    for ax, name in zip(np.atleast_1d(axes), fams.names):
        cand = np.where((pop.sed_lib == name) & (pop.z > 0.3) & (pop.z < 0.9))[0]
        i = cand[np.argsort(sim.bands["GI"].snr[cand])[len(cand) * 3 // 4]]
        models = []
        for b, col in (("GV", "tab:blue"), ("GI", "tab:red")):
            band = sim.bands[b]
            # The band ends, where the throughput falls steeply, are far noisier: the stage masks
            # them (preprocess), so the figure does too.
            ok = (band.err[i] > 0) & (band.err[i] < 3 * np.median(band.err[i]))
            ax.plot(band.wave[ok], band.flux[i][ok], color=col, lw=0.6, alpha=0.6)
            ax.plot(band.wave[ok], band.model[i][ok], color="k", lw=1)
            models.append(band.model[i][ok])
        top = np.percentile(np.concatenate(models), 99.5)
        ax.set_ylim(-0.6 * top, 1.8 * top)
        ax.set(title=f"{name}: z = {pop.z[i]:.3f}, MAG_NORM {pop.mag[i]:.2f}, SNR_GI {sim.bands['GI'].snr[i]:.1f}",
               ylabel="flux / 1e-17 cgs")
    np.atleast_1d(axes)[-1].set_xlabel("observed wavelength / A (GV blue, GI red, noiseless model black)")
    fig.tight_layout()
    fig.savefig(args.out / "families_examples.png", dpi=100)
    plt.close(fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
