"""``csst-sls-z inspect``: read an SLS_REDSHIFT product the way a person would.

    csst-sls-z inspect OUT.fits [--truth IN.fits] [--plot FILE.png] [--z-bins 0,0.5,1,1.5]
    csst-sls-z inspect --zwarn 40

Prints a summary (objects, ZWARN == 0, each ZWARN bit by name with its count and meaning,
the median ZERR / (1 + Z), the SNR_GI quartiles); against the truth (``--truth``, or a
TRUTH extension in the file, matched on OBJID) sigma_NMAD, eta, E-bar and the mean bias,
overall and in z bins, computed by ``csst_sls_z.training.metrics``. ``--plot`` writes a
PNG: Z against Z_TRUE coloured by SNR_GI (Z against SNR_GI without truth), the ZERR
distribution, the ZWARN counts, and three example spectra on the network grid with the
lines at Z marked. ``--zwarn N`` decodes a ZWARN value and exits. No TensorFlow.

Exit codes: 0 ok, 1 error (one sentence on stderr).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .commands import CommandError, Parser, nonneg_int, setup_logging
from .datamodel import (EXIT_ERROR, EXIT_OK, EXT_REDSHIFT, EXT_SPEC, EXT_TRUTH, KW_CALIBRATION_METHOD,
                        KW_INPUT_NAME, KW_REFSET, KW_STATUS, ZWarn)

PROG = "csst-sls-z inspect"
DEFAULT_Z_BINS = (0.0, 0.3, 0.6, 0.9, 1.2, 1.6)
# Rest-frame lines marked on the example spectra (Angstrom, air; labels as printed).
LINES = (("[OII]", 3727.4), ("Hb", 4862.7), ("[OIII]", 5008.2), ("Ha", 6564.6), ("[SII]", 6725.0))


def parser():
    p = Parser(prog=PROG, description="Summarise an SLS_REDSHIFT product (output of csst-sls-z run): ZWARN "
                "bits with counts and meanings, uncertainties, SNR; metrics against the truth; a figure. "
                "Exit 0 ok, 1 error.")
    p.add_argument("product", nargs="?", type=Path, help="an output product holding SLS_REDSHIFT")
    p.add_argument("--truth", type=Path, default=None,
                   help="product with a TRUTH extension (the run's input), matched on OBJID "
                        "(default: the TRUTH extension of PRODUCT, if any)")
    p.add_argument("--plot", type=Path, default=None, metavar="FILE.png", help="write a figure (PNG) here")
    p.add_argument("--z-bins", type=_edges, default=None, metavar="EDGES",
                   help="comma-separated Z_TRUE bin edges for the binned metrics "
                        f"(default: {','.join(f'{e:g}' for e in DEFAULT_Z_BINS)}, widened to the data)")
    p.add_argument("--reference-dir", type=Path, default=None,
                   help="reference set whose wavegrid the example spectra are shown on "
                        "(default: $CSST_SLS_Z_REFDIR, else the shipped set)")
    p.add_argument("--zwarn", type=nonneg_int, default=None, metavar="N",
                   help="decode the ZWARN value N into its bits and exit")
    return p


def _edges(text):
    import argparse
    try:
        edges = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise argparse.ArgumentTypeError(f"expected at least two increasing edges, got {text!r}")
    return tuple(edges)


# ---------------------------------------------------------------- ZWARN
def decode_zwarn(value: int) -> list[tuple[int, str, str]]:
    """(bit, name, meaning) of every bit set in ``value``, defined or not."""
    flags = {flag.bit: flag for flag in ZWarn}
    out = []
    for bit in range(int(value).bit_length()):
        if not (int(value) >> bit) & 1:
            continue
        if bit in flags:
            out.append((bit, flags[bit].name, flags[bit].meaning))
        else:
            what = "reserved for downstream use" if bit in ZWarn.reserved_downstream() else "not defined"
            out.append((bit, f"BIT{bit}", what))
    return out


def zwarn_text(value: int) -> str:
    bits = decode_zwarn(value)
    if not bits:
        return f"ZWARN {value}: no bit set, the redshift is usable"
    lines = [f"ZWARN {value} = {' | '.join(name for _, name, _ in bits)}"]
    lines += [f"  bit {bit:2d} {name:<20} {meaning}" for bit, name, meaning in bits]
    return "\n".join(lines)


# ---------------------------------------------------------------- reading
@dataclass
class Product:
    path: Path
    catalog: np.ndarray            # the SLS_REDSHIFT table
    header: dict                   # a few SLS_REDSHIFT header values
    truth: np.ndarray | None       # Z_TRUE per catalogue row (NaN where unmatched), or None
    truth_source: str | None
    spectra_path: Path | None      # a file holding SPEC_GV / SPEC_GI for these objects


def _open_fits(path: Path, what: str):
    from astropy.io import fits
    if not path.exists():
        raise CommandError(f"{what} {path} does not exist")
    if not path.is_file():
        raise CommandError(f"{what} {path} is not a regular file")
    with open(path, "rb") as fh:
        magic = fh.read(9)
    if magic[:2] != b"\x1f\x8b" and not magic.startswith(b"SIMPLE  ="):
        raise CommandError(f"{what} {path} is not a FITS file")
    try:
        return fits.open(path, memmap=True)
    except Exception as exc:       # astropy's errors are many; the user gets one sentence
        raise CommandError(f"{what} {path} cannot be read as FITS ({' '.join(str(exc).split())})") from None


def _extnames(hdul) -> set:
    return {str(h.header.get("EXTNAME", "")).strip().upper() for h in hdul[1:]}


def _truth_table(hdul, path: Path) -> tuple[np.ndarray, np.ndarray]:
    t = hdul[EXT_TRUTH].data
    names = {n.upper() for n in (t.columns.names if t is not None else [])}
    if t is None or not {"OBJID", "Z_TRUE"} <= names:
        raise CommandError(f"the TRUTH extension of {path} has no OBJID and Z_TRUE columns")
    return np.asarray(t["OBJID"], dtype=np.int64), np.asarray(t["Z_TRUE"], dtype=np.float64)


def read_product(path: Path, truth_path: Path | None = None) -> Product:
    with _open_fits(path, "product") as hdul:
        names = _extnames(hdul)
        if EXT_REDSHIFT not in names:
            raise CommandError(f"product {path} has no {EXT_REDSHIFT} extension; inspect reads the output of "
                           "csst-sls-z run")
        hdu = hdul[EXT_REDSHIFT]
        data = hdu.data
        needed = ("OBJID", "Z", "ZERR", "ZWARN", "SNR_GI")
        have = set(data.columns.names) if data is not None else set()
        if data is None or not set(needed) <= have:
            raise CommandError(f"{EXT_REDSHIFT} of {path} lacks the columns "
                           f"{', '.join(c for c in needed if c not in have)}")
        catalog = np.array(data)           # a copy: the file closes
        header = {k: hdu.header.get(k) for k in (KW_REFSET, KW_STATUS, KW_CALIBRATION_METHOD, KW_INPUT_NAME)}
        has_spectra = all(EXT_SPEC[b] in names for b in ("GV", "GI"))
        truth = own_truth = None
        if truth_path is None and EXT_TRUTH in names:
            own_truth = _truth_table(hdul, path)
    spectra_path = path if has_spectra else None
    source = None
    if truth_path is not None:
        with _open_fits(truth_path, "truth product") as hdul:
            tnames = _extnames(hdul)
            if EXT_TRUTH not in tnames:
                raise CommandError(f"truth product {truth_path} has no {EXT_TRUTH} extension")
            own_truth = _truth_table(hdul, truth_path)
            if spectra_path is None and all(EXT_SPEC[b] in tnames for b in ("GV", "GI")):
                spectra_path = truth_path
        source = str(truth_path)
    elif own_truth is not None:
        source = f"{EXT_TRUTH} extension of {path}"
    if own_truth is not None:
        objid, z_true = own_truth
        order = np.argsort(objid, kind="stable")
        pos = np.searchsorted(objid[order], catalog["OBJID"])
        pos = np.clip(pos, 0, max(len(objid) - 1, 0))
        hit = (objid[order][pos] == catalog["OBJID"]) if len(objid) else np.zeros(len(catalog), bool)
        truth = np.full(len(catalog), np.nan)
        truth[hit] = z_true[order][pos[hit]]
        if not hit.any():
            raise CommandError(f"no OBJID of {path} is in the truth table of {source}")
    return Product(path, catalog, header, truth, source, spectra_path)


# ---------------------------------------------------------------- numbers
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


def report(prod: Product, edges=None) -> str:
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


# ---------------------------------------------------------------- figure
def _examples(cat: np.ndarray) -> list[int]:
    """Rows of three examples: the 90th, 50th and 10th percentile of SNR_GI among finite Z."""
    z = np.asarray(cat["Z"], dtype=float)
    snr = np.asarray(cat["SNR_GI"], dtype=float)
    rows = np.flatnonzero(np.isfinite(z) & np.isfinite(snr))
    if rows.size == 0:
        return []
    order = rows[np.argsort(snr[rows], kind="stable")]
    picks = [order[int(round(f * (order.size - 1)))] for f in (0.9, 0.5, 0.1)]
    return list(dict.fromkeys(int(r) for r in picks))


def _spectra(path: Path, objids, reference_dir):
    """{objid: [(band, wavelength, flux, err), ...]} on the network grid (else native pixels), and a label."""
    from .products import ProductError, open_product
    grid = None
    try:
        from .reffiles.tables import load_wavegrid
        from .reffiles.sets import load_reference_set
        grid = load_wavegrid(load_reference_set(reference_dir, required=("wavegrid",)).path("wavegrid"))
    except Exception:     # no usable reference set: show the native pixels instead
        grid = None
    out = {}
    try:
        with open_product(path) as reader:
            index = {int(o): k for k, o in enumerate(reader.objid)}
            for objid in objids:
                k = index.get(int(objid))
                if k is None:
                    continue
                bands = {b: reader.read_band(b, slice(k, k + 1)) for b in ("GV", "GI")}
                if grid is not None:
                    from .preprocess import preprocess_bands
                    pp = preprocess_bands(bands, grid, 1)
                    parts = []
                    for b in grid.bands:
                        lo = grid.offset(b)
                        hi = lo + grid.sizes[grid.bands.index(b)]
                        ok = pp.valid[0, lo:hi]
                        f = np.where(ok, pp.x[0, lo:hi, 0], np.nan)
                        e = np.where(ok, pp.x[0, lo:hi, 1], np.nan)
                        parts.append((b, grid.centres(b), f, e))
                    out[int(objid)] = parts
                else:
                    out[int(objid)] = [(b, *bands[b].pixels(0)) for b in ("GV", "GI")]
    except (ProductError, OSError):
        return {}, ""
    return out, ("network grid, flux and error / the object's scale" if grid is not None
                 else "native pixels (no reference set for the network grid)")


def plot(prod: Product, out_path: Path, reference_dir=None) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure
    cat = prod.catalog
    z = np.asarray(cat["Z"], dtype=float)
    zerr = np.asarray(cat["ZERR"], dtype=float)
    snr = np.asarray(cat["SNR_GI"], dtype=float)
    zwarn = np.asarray(cat["ZWARN"], dtype=np.int64)
    fig = Figure(figsize=(15, 9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3)
    snr_c = np.clip(np.where(np.isfinite(snr), snr, np.nan), 0.1, None)
    norm = LogNorm(vmin=max(np.nanmin(snr_c), 0.1), vmax=max(np.nanmax(snr_c), 1.0)) \
        if np.isfinite(snr_c).any() else None
    ok = zwarn == 0

    ax = axes[0, 0]
    if prod.truth is not None:
        zt = prod.truth
        for sel, marker, label in ((ok, "o", "ZWARN == 0"), (~ok, "x", "ZWARN != 0")):
            sc = ax.scatter(zt[sel], z[sel], c=snr_c[sel], cmap="viridis", norm=norm, s=10, marker=marker,
                            label=f"{label} ({int(sel.sum())})")
        top = float(np.nanmax(np.concatenate([zt, z[np.isfinite(z)], [1.0]])))
        grid = np.array([0.0, top])
        ax.plot(grid, grid, "k-", lw=0.8)
        for sgn in (-1, 1):
            ax.plot(grid, grid + sgn * 0.02 * (1 + grid), "k:", lw=0.8)
        ax.set_xlabel("Z_TRUE")
        ax.set_title("Z against the truth (dotted: |dz|/(1+z) = 0.02)")
    else:
        for sel, marker, label in ((ok, "o", "ZWARN == 0"), (~ok, "x", "ZWARN != 0")):
            sc = ax.scatter(snr_c[sel], z[sel], c=snr_c[sel], cmap="viridis", norm=norm, s=10, marker=marker,
                            label=f"{label} ({int(sel.sum())})")
        ax.set_xscale("log")
        ax.set_xlabel("SNR_GI")
        ax.set_title("Z against SNR_GI (no truth given)")
    ax.set_ylabel("Z")
    ax.legend(loc="upper left", fontsize=8)
    if norm is not None:
        from matplotlib.ticker import FormatStrFormatter
        bar = fig.colorbar(sc, ax=ax, label="SNR_GI")
        bar.ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        bar.ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))

    ax = axes[0, 1]
    rel = zerr / (1 + z)
    fin = np.isfinite(rel) & (rel > 0)
    if fin.any():
        bins = np.logspace(np.log10(rel[fin].min()), np.log10(rel[fin].max()) + 1e-9, 40)
        ax.hist(rel[fin], bins=bins, histtype="step", color="k", label=f"all ({int(fin.sum())})")
        ax.hist(rel[fin & ok], bins=bins, histtype="stepfilled", alpha=0.4, label="ZWARN == 0")
        ax.set_xscale("log")
        ax.axvline(np.median(rel[fin]), color="C3", ls="--", lw=1, label=f"median {np.median(rel[fin]):.4f}")
        ax.legend(fontsize=8)
    ax.set_xlabel("ZERR / (1 + Z)")
    ax.set_ylabel("objects")
    ax.set_title("calibrated uncertainty")

    ax = axes[0, 2]
    s = summary(cat)
    names = ["ZWARN == 0"] + [name for _, name, _, _ in s["bits"]]
    counts = [s["n_ok"]] + [count for _, _, count, _ in s["bits"]]
    ypos = np.arange(len(names))[::-1]
    ax.barh(ypos, counts, color=["C2"] + ["C1"] * (len(names) - 1))
    ax.set_yticks(ypos, names, fontsize=8)
    for y, c in zip(ypos, counts):
        ax.text(c, y, f" {c}", va="center", fontsize=8)
    ax.set_xlabel("objects")
    ax.set_title(f"ZWARN bits ({s['n_objects']} objects)")
    ax.set_xlim(0, max(counts + [1]) * 1.15)

    rows = _examples(cat)
    spectra, label = ({}, "")
    if prod.spectra_path is not None and rows:
        spectra, label = _spectra(prod.spectra_path, [int(cat["OBJID"][r]) for r in rows], reference_dir)
    for i, ax in enumerate(axes[1]):
        if i >= len(rows) or int(cat["OBJID"][rows[i]]) not in spectra:
            ax.text(0.5, 0.5, "no spectra in the product" if prod.spectra_path is None else "no example",
                    ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        r = rows[i]
        shown = []
        for band, wave, flux, err in spectra[int(cat["OBJID"][r])]:
            ax.plot(wave, flux, lw=0.7, color="C0" if band == "GV" else "C1", label=f"{band} flux")
            ax.plot(wave, err, lw=0.7, color="0.4", label="error" if band == "GI" else None)
            shown.append(np.asarray(flux, dtype=float))
        values = np.concatenate(shown) if shown else np.zeros(0)
        values = values[np.isfinite(values)]
        if values.size:     # the band ends are noisy: scale to the bulk of the pixels
            p1, p99 = np.percentile(values, [1, 99])
            pad = 0.15 * (p99 - p1) + 1e-6
            ax.set_ylim(min(p1 - pad, -pad), p99 + pad)
        lo, hi = ax.get_xlim()
        for name, rest in LINES:
            obs = rest * (1 + z[r])
            if lo < obs < hi:
                ax.axvline(obs, color="C3", lw=0.8, ls="--")
                ax.text(obs, 0.97, name, transform=ax.get_xaxis_transform(), rotation=90, va="top",
                        ha="right", fontsize=7, color="C3")
        truth = "" if prod.truth is None or not np.isfinite(prod.truth[r]) else f", Z_TRUE {prod.truth[r]:.3f}"
        bits = ",".join(name for _, name, _ in decode_zwarn(int(zwarn[r]))) or "0"
        ax.set_title(f"OBJID {int(cat['OBJID'][r])}: Z {z[r]:.3f} +- {zerr[r]:.3f}{truth}\n"
                     f"SNR_GI {snr[r]:.1f}, ZWARN {bits}", fontsize=9)
        ax.set_xlabel("wavelength [Angstrom] (dashed: lines at Z)")
        ax.set_ylabel("flux / scale" if label.startswith("network") else "flux [1e-17 erg/s/cm2/A]")
        if i == 0:
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{prod.path.name}" + (f" - example spectra on the {label}" if label else ""), fontsize=11)
    out_path = Path(out_path)
    try:
        fig.savefig(out_path, format="png", dpi=90)
    except OSError as exc:
        raise CommandError(f"cannot write the figure {out_path} ({exc.strerror or exc})") from None
    return out_path


# ---------------------------------------------------------------- the command
def main(argv=None) -> int:
    args = parser().parse_args(argv)
    setup_logging("WARNING")
    if args.zwarn is not None:
        print(zwarn_text(args.zwarn))
        return EXIT_OK
    if args.product is None:
        print(f"{PROG}: error: give an output product to inspect, or --zwarn N", file=sys.stderr)
        return EXIT_ERROR
    try:
        if args.plot is not None and not args.plot.parent.is_dir():
            raise CommandError(f"cannot write the figure {args.plot}: directory {args.plot.parent} does not exist")
        prod = read_product(args.product, args.truth)
        print(report(prod, args.z_bins))
        if args.plot is not None:
            print(f"figure: {plot(prod, args.plot, args.reference_dir)}")
    except CommandError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
