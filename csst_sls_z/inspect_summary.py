"""What ``csst-sls-z inspect`` prints: a ZWARN value decoded, and the summary of an output
(objects, ZWARN == 0, each bit with its count and meaning, ZERR, SNR_GI; against the truth
sigma_NMAD, eta, E-bar and the bias, overall and in z bins, by ``training.metrics``).
"""
from __future__ import annotations

import numpy as np

from .datamodel import EXT_REDSHIFT, KW_REFSET, KW_STATUS, ZWarn
from .products.output_reader import OutputProduct

DEFAULT_Z_BINS = (0.0, 0.3, 0.6, 0.9, 1.2, 1.6)
ZWARN_MAX = 2**31 - 1                      # the ZWARN column is int32 ('J')


def zwarn_text(value: int) -> str:
    bits = ZWarn.decode(value)
    if not bits:
        return f"ZWARN {value}: no bit set, the redshift is usable"
    lines = [f"ZWARN {value} = {' | '.join(name for _, name, _ in bits)}"]
    lines += [f"  bit {bit:2d} {name:<20} {meaning}" for bit, name, meaning in bits]
    defined = {flag.bit for flag in ZWarn}
    downstream = ZWarn.reserved_downstream()
    undefined = [bit for bit, _, _ in bits if bit not in defined and bit not in downstream]
    reserved = [bit for bit, _, _ in bits if bit in downstream]
    if undefined:
        lo, hi = min(defined), max(defined)
        lines.append(f"{value} has undefined bits set ({', '.join(map(str, undefined))}): this version defines "
                     f"bits {lo}-{hi} and leaves {downstream.start}-{downstream.stop - 1} to downstream stages, so a newer "
                     f"version wrote it or it is not a ZWARN value")
    if reserved:
        lines.append(f"bit{'s' if len(reserved) > 1 else ''} {', '.join(map(str, reserved))} "
                     f"{'are' if len(reserved) > 1 else 'is'} reserved for downstream stages: csst_sls_z never "
                     f"sets {'them' if len(reserved) > 1 else 'it'}")
    if value > ZWARN_MAX:
        lines.append(f"{value} does not fit the ZWARN column (32-bit signed, at most {ZWARN_MAX})")
    return "\n".join(lines)


def summary(cat: np.ndarray) -> dict:
    zwarn = np.asarray(cat["ZWARN"], dtype=np.int64)
    z = np.asarray(cat["Z"], dtype=float)
    zerr = np.asarray(cat["ZERR"], dtype=float)
    snr = np.asarray(cat["SNR_GI"], dtype=float)
    finite = np.isfinite(z) & np.isfinite(zerr)
    snr_ok = snr[np.isfinite(snr)]
    return {
        "n_objects": int(len(cat)),
        "n_ok": int(np.count_nonzero(zwarn == 0)),
        "bits": [(flag.bit, flag.name, int(np.count_nonzero(zwarn & int(flag))), flag.meaning) for flag in ZWarn],
        "other_bits": int(np.count_nonzero(zwarn & ~sum(int(flag) for flag in ZWarn))),
        "n_finite_z": int(np.count_nonzero(finite)),
        "median_zerr_1pz": float(np.median(zerr[finite] / (1.0 + z[finite]))) if finite.any() else float("nan"),
        "snr_gi_quartiles": tuple(float(q) for q in np.percentile(snr_ok, [25, 50, 75])) if snr_ok.size
        else (float("nan"),) * 3,
    }


def truth_metrics(z, zerr, z_true, edges=None) -> dict:
    """sigma_NMAD, eta, E-bar (csst_sls_z.training.metrics) and the mean bias, overall and in z bins.

    Objects without a truth (NaN z_true) are left out; a NaN Z counts as an outlier (metrics' rule).
    """
    from .training.metrics import binned, mean_uncertainty, outlier_fraction, sigma_nmad
    z, zerr, z_true = (np.asarray(a, dtype=float) for a in (z, zerr, z_true))
    keep = np.isfinite(z_true)
    z, zerr, z_true = z[keep], zerr[keep], z_true[keep]
    if edges is None:
        edges = list(DEFAULT_Z_BINS)
        while z_true.size and edges[-1] < z_true.max():
            edges.append(round(edges[-1] + 0.3, 6))
    edges = np.asarray(edges, dtype=float)

    def bias(zp, zt):
        ok = np.isfinite(zp)
        return float(np.mean((zp[ok] - zt[ok]) / (1.0 + zt[ok]))) if ok.any() else float("nan")

    fns = {"sigma_nmad": (sigma_nmad, (z, z_true)), "eta": (outlier_fraction, (z, z_true)),
           "ebar": (mean_uncertainty, (zerr, z_true)), "bias": (bias, (z, z_true))}
    overall = {k: fn(*arrays) for k, (fn, arrays) in fns.items()}
    per_bin = {k: binned(fn, z_true, edges, *arrays) for k, (fn, arrays) in fns.items()}
    bins = [{"lo": b["lo"], "hi": b["hi"], "n": b["n"], **{k: per_bin[k][i]["value"] for k in fns}}
            for i, b in enumerate(per_bin["sigma_nmad"])]
    return {"n": int(z.size), "overall": overall, "bins": bins}


def _fmt(v, spec=".4f"):
    return "nan" if not np.isfinite(v) else format(v, spec)


def report(prod: OutputProduct, edges=None) -> str:
    cat = prod.catalog
    s = summary(cat)
    n = max(s["n_objects"], 1)
    head = f"{prod.path}: {EXT_REDSHIFT}, {s['n_objects']} objects"
    extra = [f"{k} {v}" for k, v in prod.header.items() if v not in (None, "") and k in (KW_STATUS, KW_REFSET)]
    lines = [head + (f" ({', '.join(extra)})" if extra else ""),
             f"ZWARN == 0: {s['n_ok']} ({100 * s['n_ok'] / n:.1f}%)",
             "ZWARN bits:  bit  name                  count  meaning"]
    lines += [f"             {bit:3d}  {name:<20} {count:6d}  {meaning}" for bit, name, count, meaning in s["bits"]]
    if s["other_bits"]:
        lines.append(f"             objects with bits this version does not define: {s['other_bits']}")
    q = s["snr_gi_quartiles"]
    lines += [f"median ZERR/(1+Z): {_fmt(s['median_zerr_1pz'])} ({s['n_finite_z']} objects with a finite Z)",
              f"SNR_GI quartiles: {_fmt(q[0], '.2f')} / {_fmt(q[1], '.2f')} / {_fmt(q[2], '.2f')} (25/50/75%)"]
    if prod.truth is None:
        lines.append("truth: none (give --truth IN.fits, the run's input, for sigma_NMAD, eta, E-bar)")
        return "\n".join(lines)
    zwarn = np.asarray(cat["ZWARN"])
    groups = [("all", np.ones(len(cat), bool)), ("ZWARN == 0", zwarn == 0)]
    lines.append(f"against the truth ({prod.truth_source}; {int(np.isfinite(prod.truth).sum())} of "
                 f"{len(cat)} objects matched on OBJID):")
    lines.append("  objects        n  sigma_NMAD     eta   E-bar      bias")
    for label, sel in groups:
        m = truth_metrics(cat["Z"][sel], cat["ZERR"][sel], prod.truth[sel], edges)
        o = m["overall"]
        lines.append(f"  {label:<11}{m['n']:6d}  {_fmt(o['sigma_nmad']):>10}  {_fmt(100 * o['eta'], '.1f'):>5}%  "
                     f"{_fmt(o['ebar']):>6}  {_fmt(o['bias'], '+.4f'):>8}")
    m = truth_metrics(cat["Z"], cat["ZERR"], prod.truth, edges)
    lines.append("  in Z_TRUE bins (all objects):")
    lines.append("  Z_TRUE           n  sigma_NMAD     eta   E-bar      bias")
    for b in m["bins"]:
        lines.append(f"  {b['lo']:4.2f}-{b['hi']:4.2f}  {b['n']:6d}  {_fmt(b['sigma_nmad']):>10}  "
                     f"{_fmt(100 * b['eta'], '.1f'):>5}%  {_fmt(b['ebar']):>6}  {_fmt(b['bias'], '+.4f'):>8}")
    return "\n".join(lines)
