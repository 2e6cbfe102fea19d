"""The evaluation figures, one for each of the paper's Figures 7 and 9-12, plus the
objective comparison. The oracle (information bound) is overlaid where it has a value."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _centres(bins):
    return np.array([(b["lo"] + min(b["hi"], 10.0)) / 2 for b in bins])


def make_figures(out_dir, res, arrays_path, cal):
    from .calibration_fit import pit, reliability_curve
    plt = _plt()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    a = np.load(arrays_path)
    zt = a["z_true"]
    # Figure 7: CNN point estimates.
    fig, ax = plt.subplots(figsize=(5.5, 5))
    sc = ax.scatter(zt, a["z_cnn"], c=np.log10(np.clip(a["snr_gi"], 1e-2, None)), s=2, cmap="viridis")
    ax.plot([0, 1.6], [0, 1.6], "k--", lw=0.8)
    ax.set(xlabel="z true", ylabel="Z_CNN", title=f"CNN: sigma_NMAD {res['cnn']['sigma_nmad']:.5f}, "
           f"eta {100 * res['cnn']['eta']:.2f}%", xlim=(0, 1.6), ylim=(0, 1.6))
    fig.colorbar(sc, label="log10 SNR_GI")
    fig.savefig(out / "fig07_cnn.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    # Figure 9: sigma_NMAD and eta vs z, oracle overlaid.
    fig, axes = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
    block = res["bins"]["z_true"]
    for m, style in (("cnn", "o-"), ("bnn", "s-"), ("oracle", "k^--"), ("template_fit", "x:")):
        for ax, metric in zip(axes, ("sigma_nmad", "eta")):
            bins = block[m][metric]
            ax.plot(_centres(bins), [b["value"] for b in bins], style, label=m)
    axes[0].set(ylabel="sigma_NMAD", yscale="log")
    axes[1].set(ylabel="eta", xlabel="z true")
    axes[0].legend()
    fig.savefig(out / "fig09_metrics_vs_z.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    # Figure 10: reliability diagram before and after calibration.
    fig, ax = plt.subplots(figsize=(5, 5))
    F = pit(a["mean"], a["sigma"], zt)
    for label, vals in (("raw", F), ("Beta calibrated", cal.beta.cdf_map(F))):
        e, o = reliability_curve(vals)
        ax.plot(e, o, "o-", ms=3, label=label)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="expected fraction in central interval", ylabel="observed fraction", title="reliability")
    ax.legend()
    fig.savefig(out / "fig10_reliability.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    # Figure 11: calibrated BNN with error bars.
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.errorbar(zt, a["z_bnn"], yerr=[a["z_bnn"] - a["z_lo"], a["z_hi"] - a["z_bnn"]], fmt="none",
                ecolor="lightblue", lw=0.5)
    ax.scatter(zt, a["z_bnn"], s=2, c="C0")
    ax.plot([0, 1.6], [0, 1.6], "k--", lw=0.8)
    ax.set(xlabel="z true", ylabel="Z (BNN, calibrated)", xlim=(0, 1.6), ylim=(0, 1.6),
           title=f"BNN: sigma_NMAD {res['bnn']['sigma_nmad']:.5f}, eta {100 * res['bnn']['eta']:.2f}%, "
                 f"E {res['bnn']['ebar']:.5f}")
    fig.savefig(out / "fig11_bnn.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    # Figure 12: E-bar vs z; E vs SNR_GI.
    fig, axes = plt.subplots(2, 1, figsize=(6, 6))
    bins = block["bnn"]["ebar"]
    axes[0].plot(_centres(bins), [b["value"] for b in bins], "s-")
    axes[0].axhline(res["bnn"]["ebar"], color="k", ls="--", lw=0.8)
    axes[0].set(xlabel="z true", ylabel="E-bar")
    axes[1].scatter(a["snr_gi"], a["zerr"] / (1 + zt), s=2)
    axes[1].set(xscale="log", yscale="log", xlabel="SNR_GI", ylabel="ZERR / (1 + z)")
    fig.savefig(out / "fig12_uncertainty.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    # Objective comparison at equal training time.
    hist = res.get("backbone_histories") or {}
    if hist:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for objective, h in hist.items():
            t = [e["elapsed_s"] / 60 for e in h]
            axes[0].plot(t, [e["sigma_nmad"] for e in h], "o-", label=objective)
            axes[1].plot(t, [e["eta"] for e in h], "o-", label=objective)
        for ax, label in zip(axes, ("validation sigma_NMAD", "validation eta")):
            ax.set(xlabel="training wall time (min)", ylabel=label, yscale="log")
            ax.legend()
        fig.savefig(out / "objective_curves.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
