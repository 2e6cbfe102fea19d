"""Make the figures and numbers of docs/simulation.md.

    python docs/figures/make_simulation_figures.py --out docs/figures

writes three PNG files into --out and prints, as markdown, every number the document
quotes (instrument table, population constants, SNR statistics, the example objects, the
point-source depth check). ``--seed-scan K`` additionally repeats the SNR statistics for
seeds 1..K (K simulations of --n objects; slow).

* ``snr_histograms.png``: mean-pixel SNR of GV, GI and the whole spectrum for --n objects
  of the CSST-like test population (seed --seed), in 0.1-dex bins and in linear bins.
* ``example_spectra.png``: two simulated spectra against their noiseless renderings and
  their input SEDs (like the paper's Figure 5): one low-z bright, one high-z faint.
* ``self_broadening.png``: one narrow emission line seen through a point source and
  through 2-arcsec discs, against the prediction from the projected profile.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LINES = {"[OII]": 3727.4, "Hbeta": 4862.7, "[OIII]": 5008.2, "Halpha": 6564.6, "MgII": 2799.5,
         "CaII K,H": 3950.0, "4000 A": 4000.0}
PNG_META = {"Software": None}


def log_mode(snr, width=0.1):
    """Centre (as SNR) of the fullest bin of log10(snr), bin edges at multiples of ``width`` dex."""
    edges = np.round(np.arange(-2.0, 2.0 + width / 2, width), 10)
    counts, _ = np.histogram(np.log10(snr[snr > 0]), edges)
    k = int(np.argmax(counts))
    return 10 ** (0.5 * (edges[k] + edges[k + 1]))


def lin_mode(snr, width=0.1):
    edges = np.arange(0.0, 20.0 + width / 2, width)
    counts, _ = np.histogram(snr, edges)
    k = int(np.argmax(counts))
    return 0.5 * (edges[k] + edges[k + 1])


def whole_snr(sim):
    """Mean of max(FLUX, 0) / ERR over the valid pixels of GV and GI together."""
    num = np.zeros(len(sim))
    den = np.zeros(len(sim))
    for b in sim.bands.values():
        valid = (b.err > 0) & b.present[:, None]
        num += np.where(valid, np.clip(b.flux, 0, None) / np.where(valid, b.err, 1), 0).sum(axis=1)
        den += valid.sum(axis=1)
    return num / np.maximum(den, 1)


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# ---------------------------------------------------------------------------- tables
def instrument_table(instrument):
    from csst_sls_z.simulation.instrument import INSTRUMENT_PARAMETERS, THROUGHPUT_SOURCE
    rows = []
    for name, (value, unit, source, estimate) in INSTRUMENT_PARAMETERS.items():
        loaded = instrument.p(name)
        assert np.isclose(loaded, value), f"reference file has {name}={loaded}, code table {value}"
        rows.append((f"`{name}`", f"{value:.6g}", unit, source + (" (*estimate*)" if estimate else "")))
    rows.append(("throughput GV, GI", "table", "", THROUGHPUT_SOURCE))
    return md_table(["parameter", "value", "unit", "source"], rows)


def population_table():
    from csst_sls_z.simulation import population as P
    rows = [(name, getattr(P, name)) for name in
            ("MAG_BRIGHT_Z0", "MAG_SLOPE", "MAG_FAINT_TAIL", "MAG_SMOOTH", "MAG_RANGE", "NZ_Z0", "NZ_ZMAX",
             "TRAIN_ZMAX")]
    from csst_sls_z.simulation.families import DEFAULT_FAMILIES, FamilySet
    from csst_sls_z.simulation import load_models
    fs = FamilySet(load_models()[1], DEFAULT_FAMILIES)
    rows.append(("default SED families (`simulate`)", fs.spec()))
    return md_table(["constant (population.py)", "value"], rows)


# ---------------------------------------------------------------------------- figures
def snr_figure(sim, out, seed):
    gv, gi, whole = sim.bands["GV"].snr, sim.bands["GI"].snr, whole_snr(sim)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    edges = np.arange(-1.5, 1.6, 0.1)
    for snr, label, color in ((gv, "GV", "tab:blue"), (gi, "GI", "tab:red"), (whole, "GV+GI", "k")):
        axes[0].hist(np.log10(np.clip(snr, 1e-3, None)), edges, histtype="step", color=color, lw=1.5,
                     label=f"{label}: log-mode {log_mode(snr):.2f}, median {np.median(snr):.2f}")
        axes[1].hist(snr, np.arange(0, 8.01, 0.1), histtype="step", color=color, lw=1.5,
                     label=f"{label}: linear-bin mode {lin_mode(snr):.2f}")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.set_ylabel("objects per bin")
    axes[0].axvline(0.0, color="grey", ls=":")
    axes[0].axvline(np.log10(2.0), color="grey", ls="--")
    axes[0].set_xlabel("log10 mean-pixel SNR (0.1-dex bins)")
    axes[1].set_xlabel("mean-pixel SNR (0.1-wide bins)")
    fig.suptitle(f"{len(sim):,} objects of the CSST-like test population (seed {seed}); "
                 f"GV SNR < 1: {np.mean(gv < 1):.1%}", fontsize=10)
    fig.tight_layout()
    path = out / "snr_histograms.png"
    fig.savefig(path, dpi=110, metadata=PNG_META)
    plt.close(fig)
    rows = [(name, f"{log_mode(s):.2f}", f"{lin_mode(s):.2f}", f"{np.median(s):.2f}", f"{np.mean(s < 1):.1%}")
            for name, s in (("GV", gv), ("GI", gi), ("GV+GI (whole spectrum)", whole))]
    return path, md_table(["SNR", "mode, 0.1-dex bins", "mode, 0.1-wide linear bins", "median", "fraction < 1"],
                          rows)


def pick_examples(sim):
    pop = sim.population
    gi = sim.bands["GI"].snr
    rules = [("low-z bright", (pop.z > 0.1) & (pop.z < 0.3), 5.0),
             ("high-z faint", (pop.z > 0.9) & (pop.z < 1.2), 1.0)]
    picks = []
    for label, sel, target in rules:
        idx = np.flatnonzero(sel)
        picks.append((label, int(idx[np.argmin(np.abs(gi[idx] - target))]), target))
    return picks


def examples_figure(sim, instrument, sedlib, out):
    from csst_sls_z.simulation.simulate import ab_amplitude
    pop = sim.population
    picks = pick_examples(sim)
    fig, axes = plt.subplots(len(picks), 1, figsize=(11, 3.6 * len(picks)))
    rows = []
    for ax, (label, i, target) in zip(axes, picks):
        lib = str(pop.sed_lib[i])
        rest = sedlib.spectra(lib, pop.sed_coeff[i:i + 1])
        amp = ab_amplitude(sedlib, rest, pop.z[i:i + 1], pop.mag[i:i + 1], instrument["GI"])[0]
        obs_wave = sedlib.wave * (1 + pop.z[i])
        in_range = (obs_wave > 3700) & (obs_wave < 10600)
        ax.plot(obs_wave[in_range], amp * rest[0][in_range], color="0.5", lw=0.6,
                label="input SED (rest R~1000, redshifted, scaled)")
        for name, color in (("GV", "tab:blue"), ("GI", "tab:red")):
            b = sim.bands[name]
            good = b.err[i] > 0
            ax.errorbar(b.wave[good], b.flux[i][good], b.err[i][good], fmt="none", ecolor=color, alpha=0.25, lw=0.5)
            ax.plot(b.wave[good], b.flux[i][good], color=color, lw=0.7, label=f"simulated {name} (SNR {b.snr[i]:.2f})")
            ax.plot(b.wave, b.model[i], color="k", lw=1.2, label="noiseless" if name == "GV" else None)
        top = max(np.percentile(sim.bands[n].model[i], 99.5) for n in ("GV", "GI"))
        for lname, lrest in LINES.items():
            lobs = lrest * (1 + pop.z[i])
            if 3800 < lobs < 10500 and lname != "4000 A":
                ax.axvline(lobs, color="green", ls=":", lw=0.8)
                ax.text(lobs, -0.55 * top, lname, rotation=90, fontsize=7, va="bottom", ha="right", color="green")
        ax.set_ylim(-0.6 * top, 1.5 * top)
        ax.set_xlim(3700, 10600)
        ax.set_ylabel("F_lambda [1e-17 erg/s/cm2/A]")
        ax.set_title(f"{label}: z = {pop.z[i]:.3f}, GI-band AB mag {pop.mag[i]:.2f}, {lib} #{pop.sed_index[i]}, "
                     f"r_eff {pop.r_eff[i]:.2f}\", n {pop.sersic_n[i]:.1f}, b/a {pop.axis_ratio[i]:.2f}, "
                     f"PA {pop.pa[i]:.0f} deg", fontsize=9)
        ax.legend(fontsize=7, loc="upper right", ncol=2)
        rows.append((label, i + 1, f"{pop.z[i]:.3f}", f"{pop.mag[i]:.2f}", lib, int(pop.sed_index[i]),
                     f"{pop.r_eff[i]:.2f}", f"{pop.sersic_n[i]:.2f}", f"{pop.axis_ratio[i]:.2f}", f"{pop.pa[i]:.0f}",
                     f"{sim.bands['GV'].snr[i]:.2f}", f"{sim.bands['GI'].snr[i]:.2f}"))
    axes[-1].set_xlabel("observed wavelength [Angstrom]")
    fig.tight_layout()
    path = out / "example_spectra.png"
    fig.savefig(path, dpi=110, metadata=PNG_META)
    plt.close(fig)
    return path, md_table(["example", "OBJID", "z", "mag", "SED", "index", "r_eff", "n", "b/a", "PA",
                           "SNR_GV", "SNR_GI"], rows)


def broadening_figure(instrument, sedlib, out):
    from scipy.special import k1

    from csst_sls_z.simulation.population import Population
    from csst_sls_z.simulation.simulate import simulate_spectra
    cases = [("point source (r_eff 0.01\")", 0.01, 1.0, 1.0, 0.0),
             ("disc n=1, r_eff 2\", b/a 1", 2.0, 1.0, 1.0, 0.0),
             ("disc n=1, r_eff 2\", b/a 0.5, PA 90 (minor axis along dispersion)", 2.0, 1.0, 0.5, 90.0),
             ("bulge n=4, r_eff 1\", b/a 1", 1.0, 4.0, 1.0, 0.0)]
    n = len(cases)
    z, line_rest = 0.3, 4000.0
    pop = Population(z=np.full(n, z), mag=np.full(n, 20.0), r_eff=np.array([c[1] for c in cases]),
                     sersic_n=np.array([c[2] for c in cases]), axis_ratio=np.array([c[3] for c in cases]),
                     pa=np.array([c[4] for c in cases]), sed_lib=np.full(n, "TEST"),
                     sed_index=np.full(n, -1, np.int32), sed_coeff=np.zeros((n, 5)))
    line = 1.0 + 200.0 * np.exp(-0.5 * ((sedlib.wave - line_rest) / 2.0) ** 2)
    sims = [simulate_spectra(pop, instrument, sedlib, np.random.default_rng(0), noise=False,
                             rest_flux=np.repeat(s[None, :], n, axis=0), amplitude=np.ones(n)).bands["GV"]
            for s in (line, np.ones_like(line))]
    b, c = sims
    emission = b.model.astype(float) - c.model
    # independent prediction for the exponential discs: 2 |x| K1(|x| / h), pixel-integrated
    pixscale = instrument.p("PIXSCALE")
    fig, ax = plt.subplots(figsize=(8, 4))
    rows = []
    for i, (label, r_eff, sn, q, pa) in enumerate(cases):
        ax.plot(b.wave, b.model[i], lw=1.3, label=label)
        contrast = emission[i].max() / c.model[i, emission[i].argmax()]
        pred_txt = ""
        if sn == 1.0 and r_eff > 1:
            scale = r_eff * np.hypot(np.cos(np.radians(pa)), q * np.sin(np.radians(pa))) / pixscale
            half, sub = 220, 16
            x = np.arange(-half, half + 1)[:, None] + (np.arange(sub)[None, :] + 0.5) / sub - 0.5
            h = scale / 1.678346990
            ax_ = np.abs(x)
            kern = np.where(ax_ > 0, 2 * ax_ * k1(np.maximum(ax_, 1e-12) / h), 2 * h).mean(axis=1)
            kern /= kern.sum()
            pe = emission[0] * b.conv
            pred = np.convolve(pe, kern, "full")[half:half + pe.size] / b.conv
            ax.plot(b.wave, pred + c.model[i], "k--", lw=0.8,
                    label="prediction from the projected profile" if pa == 0 else None)
            pred_txt = f"{pred.max() / emission[0].max():.4f}"
        rows.append((label, f"{contrast:.2f}", f"{emission[i].max() / emission[0].max():.4f}", pred_txt))
    ax.set_xlim(line_rest * (1 + z) - 600, line_rest * (1 + z) + 600)
    ax.set_yscale("log")
    ax.set_xlabel("observed wavelength [Angstrom] (GV)")
    ax.set_ylabel("noiseless F_lambda")
    ax.set_title(f"one narrow line at {line_rest:.0f} A rest, z = {z}, flat continuum; noiseless", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "self_broadening.png"
    fig.savefig(path, dpi=110, metadata=PNG_META)
    plt.close(fig)
    return path, md_table(["source", "line peak / continuum", "peak / point-source peak",
                           "predicted (analytic projection)"], rows)


def depth_check(instrument, sedlib):
    """Mean-pixel and whole-band SNR of a flat-F_nu point source at the quoted 5-sigma depths."""
    from csst_sls_z.simulation.population import Population
    from csst_sls_z.simulation.simulate import simulate_spectra
    rows = []
    for name in ("GV", "GI"):
        mag = instrument.p(f"DEPTH_{name}")
        pop = Population(z=np.zeros(1), mag=np.full(1, mag), r_eff=np.full(1, 0.01), sersic_n=np.ones(1),
                         axis_ratio=np.ones(1), pa=np.zeros(1), sed_lib=np.full(1, "TEST"),
                         sed_index=np.full(1, -1, np.int32), sed_coeff=np.zeros((1, 5)))
        sim = simulate_spectra(pop, instrument, sedlib, np.random.default_rng(0), noise=False,
                               rest_flux=(1.0 / sedlib.wave ** 2)[None, :]).bands[name]
        e = sim.model[0].astype(float) * sim.conv
        var = (sim.err[0].astype(float) * sim.conv) ** 2
        tput = instrument[name].throughput_at(sim.wave)
        core = tput > 0.5 * tput.max()
        rows.append((name, f"{mag:.1f}", f"{np.mean(sim.model[0] / sim.err[0]):.3f}",
                     f"{e[core].sum() / np.sqrt(var[core].sum()):.1f}", int(core.sum()),
                     int(round(sim.bkgvar[0] / ((instrument[name].sky + instrument.p('DARK')) * instrument.p('T_EXP')
                                                * instrument.p('N_EXP') + instrument.p('RDNOISE') ** 2
                                                * instrument.p('N_EXP'))))))
    return md_table(["band", "depth mag (flat F_nu, z = 0, point source)", "mean-pixel SNR",
                     "SNR of the summed pixels where T > half its peak", "those pixels", "extraction rows"], rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNG files")
    parser.add_argument("--n", type=int, default=10000, help="objects in the SNR population (default 10000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the SNR population (default 1, as the test)")
    parser.add_argument("--seed-scan", type=int, default=0, metavar="K",
                        help="also print the SNR statistics for seeds 1..K (slow)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    from csst_sls_z.simulation import load_models, simulate_arrays
    instrument, sedlib, refset = load_models()
    print(f"reference set: {refset.set_id} ({refset.directory})\n")
    print("## Instrument (INSTRUMENT_PARAMETERS, checked against the reference file)\n")
    print(instrument_table(instrument), "\n")
    print("## Grids\n")
    from csst_sls_z.simulation.simulate import MAX_KERNEL_HALF, PAD_PIXELS
    print(md_table(["quantity", "value"], [
        *[(f"{b} pixels", f"{instrument[b].wavelength.size} ({instrument[b].wavelength[0]:.1f}-"
                          f"{instrument[b].wavelength[-1]:.1f} A, {instrument[b].dispersion} A/pixel)")
          for b in ("GV", "GI")],
        *[(f"{b} throughput peak", f"{instrument[b].throughput.max():.3f} at "
                                   f"{instrument[b].throughput_wave[np.argmax(instrument[b].throughput)]:.0f} A")
          for b in ("GV", "GI")],
        ("rest-frame SED grid", f"{sedlib.wave.size} points, {sedlib.wave[0]:.0f}-{sedlib.wave[-1]:.0f} A"),
        *[(f"{lib} SEDs", f"{c.shape[0]} coefficient vectors on {c.shape[1]} basis spectra")
          for lib, c in sedlib.coeffs.items()],
        ("padding / longest self-broadening kernel", f"{PAD_PIXELS} / +-{MAX_KERNEL_HALF} pixels"),
    ]), "\n")
    print("## Population constants\n")
    print(population_table(), "\n")

    sim = simulate_arrays(args.n, args.seed, "test", instrument, sedlib)
    pop = sim.population
    from csst_sls_z.simulation.simulate import extraction_rows
    rows = extraction_rows(instrument, pop)
    print(f"## Test population, {args.n} objects, seed {args.seed}\n")
    print(md_table(["quantity", "value"], [
        ("mean z", f"{pop.z.mean():.3f}"),
        ("z percentiles 5/50/95", " / ".join(f"{v:.2f}" for v in np.percentile(pop.z, [5, 50, 95]))),
        ("MAG_NORM percentiles 5/50/95", " / ".join(f"{v:.2f}" for v in np.percentile(pop.mag, [5, 50, 95]))),
        ("MAG_NORM standard deviation at 0.4 < z < 0.6",
         f"{pop.mag[(pop.z > 0.4) & (pop.z < 0.6)].std():.2f} mag"),
        ("r_eff percentiles 5/50/95 [arcsec]", " / ".join(f"{v:.2f}" for v in np.percentile(pop.r_eff, [5, 50, 95]))),
        ("fraction r_eff > 2 arcsec", f"{np.mean(pop.r_eff > 2):.3f}"),
        ("fraction Sersic n = 6", f"{np.mean(pop.sersic_n == 6):.3f}"),
        ("fraction REDROCK2016 SEDs", f"{np.mean(pop.sed_lib == 'REDROCK2016'):.3f}"),
        ("extraction rows percentiles 5/50/95", " / ".join(f"{v:.0f}" for v in np.percentile(rows, [5, 50, 95]))),
        (f"fraction at the APMAXROW cap ({instrument.p('APMAXROW'):.0f} rows)",
         f"{np.mean(rows >= instrument.p('APMAXROW')):.3f}"),
        ("fraction at the cap among Sersic n = 6", f"{np.mean(rows[pop.sersic_n == 6] >= instrument.p('APMAXROW')):.3f}"),
    ]), "\n")
    print("## Band ends: noiseless FLUX relative to the band's core (pixels with T > half its peak)\n")
    edge_rows = []
    for b in ("GV", "GI"):
        band = sim.bands[b]
        tput = instrument[b].throughput_at(band.wave)
        core = np.median(band.model[:, tput > 0.5 * tput.max()], axis=1)
        ratio = band.model / core[:, None]
        worst = ratio.max(axis=1)
        edge_rows.append((b, f"{np.median(worst):.1f}", f"{np.percentile(worst, 99):.1f}",
                          f"{band.wave[np.argmax(np.median(ratio, axis=0))]:.1f}",
                          f"{tput[0]:.4f} / {tput[-1]:.4f}"))
    print(md_table(["band", "median over objects of max(FLUX / core)", "99th percentile", "at (A, typical)",
                    "throughput at the first / last pixel"], edge_rows), "\n")
    pull_rows = []
    for b in ("GV", "GI"):
        band = sim.bands[b]
        valid = band.err > 0
        pull = ((band.flux - band.model) / np.where(valid, band.err, 1))[valid]
        pull_rows.append((b, f"{valid.sum():,}", f"{pull.mean():+.4f}", f"{pull.std():.4f}"))
    print("## Noise: pull = (FLUX - noiseless) / ERR over valid pixels\n")
    print(md_table(["band", "pixels", "mean", "std"], pull_rows), "\n")
    path, table = snr_figure(sim, args.out, args.seed)
    print(f"## SNR ({path})\n\n{table}\n")
    path, table = examples_figure(sim, instrument, sedlib, args.out)
    print(f"## Example spectra ({path})\n\n{table}\n")
    path, table = broadening_figure(instrument, sedlib, args.out)
    print(f"## Self-broadening ({path})\n\n{table}\n")
    print(f"## Depth check\n\n{depth_check(instrument, sedlib)}\n")

    if args.seed_scan:
        rows = []
        for seed in range(1, args.seed_scan + 1):
            s = simulate_arrays(args.n, seed, "test", instrument, sedlib)
            gv, gi = s.bands["GV"].snr, s.bands["GI"].snr
            rows.append((seed, f"{log_mode(gi):.2f}", f"{lin_mode(gi):.2f}", f"{np.median(gi):.3f}",
                         f"{np.mean(gv < 1):.4f}"))
        print(f"## Seed scan, {args.n} objects each\n")
        print(md_table(["seed", "GI log-mode", "GI linear-bin mode", "GI median", "GV fraction < 1"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
