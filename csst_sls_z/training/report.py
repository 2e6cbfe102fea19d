"""Markdown tables from a reference set's evaluation.json (docs/validation.md is built from them).

    python -m csst_sls_z.training.report reference_files/csst_sls_z_0002
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

PAPER = {"cnn": (0.00047, 0.00954, None), "bnn": (0.00063, 0.0092, 0.00228)}


def _f(x, pct=False):
    if x is None:
        return "-"
    return f"{100 * x:.2f}%" if pct else f"{x:.5f}"


def summary_table(ev: dict) -> str:
    rows = ["| method | sigma_NMAD | eta | E-bar | n | paper (its own simulation) |", "|---|---|---|---|---|---|"]
    for m in ("cnn", "bnn", "oracle", "template_fit"):
        e = ev[m]
        paper = PAPER.get(m)
        ptxt = (f"sigma_NMAD {paper[0]}, eta {100 * paper[1]:.3g}%" + (f", E-bar {paper[2]}" if paper[2] else "")
                if paper else ("about 1% (traditional fitting)" if m == "template_fit" else "-"))
        rows.append(f"| {m} | {_f(e['sigma_nmad'])} | {_f(e['eta'], True)} | {_f(e.get('ebar'))} | {e['n']} | {ptxt} |")
    sub = ev.get("same_subset")
    if sub:
        for m in ("cnn", "bnn"):
            rows.append(f"| {m} (oracle's {sub['n']} objects) | {_f(sub[m]['sigma_nmad'])} | {_f(sub[m]['eta'], True)} | - | {sub['n']} | |")
    return "\n".join(rows)


def coverage_table(ev: dict) -> str:
    b = ev["bnn"]
    return "\n".join([
        "| interval | raw (uncalibrated) | Beta calibrated | single scale factor |", "|---|---|---|---|",
        f"| 68% | {b['cov68_raw']:.3f} | {b['cov68']:.3f} | {b.get('cov68_scale', float('nan')):.3f} |",
        f"| 95% | {b['cov95_raw']:.3f} | {b['cov95']:.3f} | {b.get('cov95_scale', float('nan')):.3f} |"])


def binned_table(ev: dict, axis: str) -> str:
    block = ev["bins"][axis]
    methods = [m for m in ("cnn", "bnn", "oracle", "template_fit") if m in block]
    head = "| bin | " + " | ".join(f"{m} sigma_NMAD / eta" for m in methods) + " | n |"
    rows = [head, "|" + "---|" * (len(methods) + 2)]
    for i, b in enumerate(block["cnn"]["eta"]):
        hi = "inf" if b["hi"] > 1e6 else f"{b['hi']:g}"
        cells = []
        for m in methods:
            s, e = block[m]["sigma_nmad"][i]["value"], block[m]["eta"][i]["value"]
            cells.append("-" if e != e else f"{_f(s)} / {_f(e, True)}")
        rows.append(f"| {b['lo']:g}-{hi} | " + " | ".join(cells) + f" | {b['n']} |")
    return "\n".join(rows)


def curve_table(ev: dict) -> str:
    hist = ev.get("backbone_histories", {})
    rows = ["| objective | minutes | samples seen | val sigma_NMAD | val eta |", "|---|---|---|---|---|"]
    for objective, h in hist.items():
        for e in h:
            rows.append(f"| {objective} | {e['elapsed_s'] / 60:.1f} | {e['samples']:,} | {_f(e['sigma_nmad'])} | {_f(e['eta'], True)} |")
    return "\n".join(rows)


def _value(v, pct=True):
    """One table cell: '-' for a missing or NaN value."""
    return "-" if v is None or v != v else _f(v, pct)


def _cell(rec, key="eta", pct=True):
    return _value(rec.get(key) if rec else None, pct)


def family_table(ev: dict) -> str:
    """Each family's nominal test set against its own bound (evaluation.json: generalisation.families)."""
    fams = ev.get("generalisation", {}).get("families", {})
    rows = ["| family | n | BNN sigma_NMAD / eta | bound sigma_NMAD / eta (BNN on the same objects) | "
            "GI SNR > 3: BNN / bound sigma_NMAD, BNN / bound eta | 68% / 95% coverage | kept (ZWARN = 0), eta kept | "
            "outliers flagged |", "|---|---|---|---|---|---|---|---|"]
    for name, r in fams.items():
        o, b = r.get("oracle", {}), r.get("bnn_on_oracle_subset", {})
        oh, bh = o.get("snr_gt3", {}), b.get("snr_gt3", {})
        fl = r["flags"]
        rows.append(
            f"| {name} | {r['n']} | {_f(r['sigma_nmad'])} / {_f(r['eta'], True)} | "
            f"{_cell(o, 'sigma_nmad', False)} / {_cell(o)} ({_cell(b, 'sigma_nmad', False)} / {_cell(b)}) | "
            f"{_cell(bh, 'sigma_nmad', False)} / {_cell(oh, 'sigma_nmad', False)}, {_cell(bh)} / {_cell(oh)} | "
            f"{r['cov68']:.3f} / {r['cov95']:.3f} | {100 * fl['kept']:.1f}%, {_cell(fl, 'eta_kept')} | "
            f"{_cell(fl, 'flag_completeness')} |")
    return "\n".join(rows)


def peak_recall_table(ev: dict) -> str:
    """Per family: the fraction of objects whose true redshift lies in a refinement window (around
    Z or one of the p(z) peaks), by GI SNR (evaluation.json: generalisation.families.*.peak_recall)."""
    fams = {k: r["peak_recall"] for k, r in ev.get("generalisation", {}).get("families", {}).items()
            if "peak_recall" in r}
    if not fams:
        return "(no peak recall in this set: it has no refinement file)"
    first = next(iter(fams.values()))["snr_bins"]["recall"]
    labels = [_snr_label(b) for b in first]
    rows = ["| family | all | GI SNR > 3 | " + " | ".join(f"SNR {x}" for x in labels) + " |",
            "|---" * (3 + len(labels)) + "|"]
    for name, r in fams.items():
        cells = [_value(b["value"]) for b in r["snr_bins"]["recall"]]
        rows.append(f"| {name} | {_value(r['all'])} | {_value(r['snr_gt3'])} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def refined_table(ev: dict) -> str:
    """Per family and GI SNR bin: the network (BNN) -> the template refinement, sigma_NMAD and eta,
    the refined 68% coverage, and the bound on the family's oracle subset (evaluation.json:
    generalisation.families.*.snr_bins, .refined.snr_bins, .oracle.snr_bins). Each family is refined
    with a basis that does not contain it (the basis column)."""
    fams = {k: r for k, r in ev.get("generalisation", {}).get("families", {}).items() if "refined" in r}
    if not fams:
        return "(no refined estimate in this set: it has no refinement file)"
    rows = ["| family (basis) | GI SNR | n | sigma_NMAD: network -> refined (bound) | eta: network -> refined (bound) | "
            "refined 68% coverage |", "|---|---|---|---|---|---|"]
    for name, r in fams.items():
        ref, net = r["refined"], r["snr_bins"]
        bound = r.get("oracle", {}).get("snr_bins", {})
        basis = "+".join(ref.get("basis", [])) or "-"
        for i, b in enumerate(net["sigma_nmad"]):
            sigma, eta = (_change_cell(net, ref["snr_bins"], bound, key, i, pct)
                          for key, pct in (("sigma_nmad", False), ("eta", True)))
            rows.append(f"| {name} ({basis}) | {_snr_label(b)} | {b['n']} | {sigma} | {eta} | "
                        f"{_value(ref['snr_bins']['cov68'][i]['value'], False)} |")
    return "\n".join(rows)


def _snr_label(b) -> str:
    """A GI SNR bin's label: 'lo-hi', or '>= lo' for the open top bin."""
    return f"{b['lo']:g}-{b['hi']:g}" if b["hi"] < 1e8 else f">= {b['lo']:g}"


def _change_cell(before, after, bound, key, i, pct) -> str:
    """'before -> after (bound, n = N)' of bin ``i`` of ``key``; no bracket without a bound."""
    cell = f"{_value(before[key][i]['value'], pct)} -> {_value(after[key][i]['value'], pct)}"
    if bound.get(key):
        cell += f" ({_value(bound[key][i]['value'], pct)}, n = {bound[key][i]['n']})"
    return cell


def shift_table(ev: dict) -> str:
    """Shifted-instrument test sets (evaluation.json: generalisation.shifts)."""
    shifts = ev.get("generalisation", {}).get("shifts", {})
    rows = ["| parameter | where | value | sigma_NMAD | eta | GI SNR > 3 eta | 68% / 95% coverage | kept, eta kept | "
            "outliers flagged |", "|---|---|---|---|---|---|---|---|---|"]
    for param, sides in shifts.items():
        for side, r in sides.items():
            fl = r["flags"]
            rows.append(f"| {param} | {side} | {r.get('value')} | {_f(r['sigma_nmad'])} | {_f(r['eta'], True)} | "
                        f"{_cell(r['snr_gt3'])} | {r['cov68']:.3f} / {r['cov95']:.3f} | "
                        f"{100 * fl['kept']:.1f}%, {_cell(fl, 'eta_kept')} | {_cell(fl, 'flag_completeness')} |")
    return "\n".join(rows)


def _pz_row(label, pz, flags=None):
    """One row of the p(z) table from an evaluation's ``pz`` block (and the set's flags)."""
    if not pz:
        return None
    hpd = pz.get("hpd_coverage", {})
    mp = pz.get("multiple_peaks", {})
    clean = pz.get("clean_sample") or {}
    curve = clean.get("curves", {}).get("zwarn_then_zerr") or pz.get("clean_sample_curve") or {}
    at = curve.get("at", {})
    kept = clean.get("kept", flags.get("kept") if flags else None)
    eta_kept = clean.get("eta_kept", flags.get("eta_kept") if flags else None)
    return (f"| {label} | {pz['pit']['ks']:.3f} | {pz['crps_mean']:.4f} | {hpd.get('0.68', float('nan')):.3f} / "
            f"{hpd.get('0.95', float('nan')):.3f} | {pz['nz_abs_diff']:.3f} | "
            f"{_cell(mp, 'completeness_outliers')} / {_cell(mp, 'flagged_good')} | "
            f"{_value(kept)}, {_value(eta_kept)} | "
            + " / ".join(_cell(at, k) for k in ("0.5", "0.6", "0.7")) + " |")


def pz_table(ev: dict) -> str:
    """p(z) and the clean sample on every test set (evaluation.json ``pz`` and
    ``generalisation.*.pz``)."""
    rows = ["| test set | PIT KS | CRPS | HPD 68% / 95% coverage | n(z) abs diff | MULTIPLE_PEAKS: outliers "
            "caught / good flagged | kept (ZWARN = 0), eta kept | eta at 50% / 60% / 70% kept |",
            "|---|---|---|---|---|---|---|---|"]
    rows.append(_pz_row("nominal", ev.get("pz")))
    gen = ev.get("generalisation", {})
    for name, r in gen.get("families", {}).items():
        rows.append(_pz_row(f"family {name}", r.get("pz"), r.get("flags")))
    for param, sides in gen.get("shifts", {}).items():
        for side, r in sides.items():
            rows.append(_pz_row(f"{param} {side}", r.get("pz"), r.get("flags")))
    rows = [r for r in rows if r]
    return "\n".join(rows) if len(rows) > 2 else "(no p(z) evaluation in this set)"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__)
        return 1
    ev = json.loads((Path(argv[0]) / "evaluation.json").read_text())
    for title, text in (("Summary", summary_table(ev)), ("Coverage", coverage_table(ev)),
                        ("By redshift", binned_table(ev, "z_true")), ("By SNR_GI", binned_table(ev, "snr_gi")),
                        ("Objective curves", curve_table(ev)), ("Per SED family", family_table(ev)),
                        ("Peak recall (truth within a refinement window)", peak_recall_table(ev)),
                        ("Refined against the network, by GI SNR", refined_table(ev)),
                        ("Shifted instrument", shift_table(ev)), ("p(z) and the clean sample", pz_table(ev))):
        print(f"### {title}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
