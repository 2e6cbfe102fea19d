"""The figure of ``csst-sls-z inspect --plot``: one page a person reads an SLS_REDSHIFT output by.

Z against Z_TRUE coloured by SNR_GI (Z against SNR_GI without truth), the ZERR distribution
with the LARGE_ZERR threshold, the ZWARN counts, the p(z) of three example objects with Z,
Z_ALT and Z_TRUE, and their spectra on the network grid with the lines at Z marked. Written
in the format the file's suffix names. Errors are :class:`FigureError`, one sentence each.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .datamodel import KW_REFSET, ZWarn
from .inspect_summary import summary
from .products.output_reader import OutputProduct, pz_rows

# Rest-frame lines marked on the example spectra (Angstrom, air; labels as printed).
LINES = (("[OII]", 3727.4), ("Hb", 4862.7), ("[OIII]", 5008.2), ("Ha", 6564.6), ("[SII]", 6725.0))
# Figure formats --plot writes, by file suffix (matplotlib's writers that need nothing more).
FIGURE_FORMATS = ("png", "pdf", "svg", "svgz", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp")
EXAMPLE_COLOURS = ("C2", "C4", "C5")       # one per example object: its p(z) and its spectrum panel's title


class FigureError(Exception):
    """Why the figure cannot be written, in one sentence."""


def figure_format(path: Path) -> str:
    """The figure format ``path``'s suffix names; a FigureError when it names none we write."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in FIGURE_FORMATS:
        return {"jpeg": "jpg", "tiff": "tif"}.get(suffix, suffix)
    shown = ", ".join("." + f for f in FIGURE_FORMATS if f not in ("svgz", "jpeg", "tiff"))
    what = f"its suffix .{suffix} is not a figure format" if suffix else "it has no suffix to name a format"
    raise FigureError(f"cannot write the figure {path}: {what}; name it {shown}")


def check_figure_path(path: Path) -> str:
    """Every check of ``--plot`` that needs no product: its format, its directory. Returns the format."""
    if path.is_dir():
        raise FigureError(f"cannot write the figure {path}: it is a directory")
    fmt = figure_format(path)
    if not path.parent.is_dir():
        what = "is a file, not a directory" if path.parent.exists() else "does not exist"
        raise FigureError(f"cannot write the figure {path}: directory {path.parent} {what}")
    return fmt


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


def run_reference_set(prod: OutputProduct, reference_dir=None):
    """``(refset, same)``: the reference set whose wavegrid and thresholds the figure uses, and
    whether those two files are the very ones the run used (sha256 against the output's header).

    ``reference_dir`` when given; else the set the output names (REFSET, a shipped set found by
    name) if its files match, else ``$CSST_SLS_Z_REFDIR`` or the shipped default. ``(None, False)``
    when none can be read.
    """
    from .reffiles.header import ReferenceFileError
    from .reffiles.sets import load_reference_set
    wanted = ("wavegrid", "thresholds")
    if reference_dir is not None:
        candidates = [reference_dir]
    else:
        named = str(prod.header.get(KW_REFSET) or "").split(":")[0].strip()
        candidates = ([named] if named else []) + [None]
    fallback = None
    for candidate in candidates:
        try:
            refset = load_reference_set(candidate, required=wanted)
        except (ReferenceFileError, OSError) as exc:
            if reference_dir is not None:       # asked for: say why it cannot be used
                raise FigureError(" ".join(str(exc).split())) from None
            continue
        same = all(prod.references.get(t) == refset.sha256.get(t) for t in wanted)
        if same or reference_dir is not None:
            return refset, same
        fallback = fallback or refset
    return fallback, False


def _large_zerr(refset, same: bool, explicit: bool):
    """(threshold, label) of LARGE_ZERR for the ZERR panel, or (None, why not)."""
    if refset is None:
        return None, "LARGE_ZERR threshold: no reference set to read it from"
    if not (same or explicit):
        return None, "LARGE_ZERR threshold: the run's thresholds file is not at hand (give --reference-dir)"
    from .reffiles.header import ReferenceFileError
    from .reffiles.tables import load_thresholds
    try:
        value = load_thresholds(refset.path("thresholds")).large_zerr
    except (ReferenceFileError, OSError):
        return None, "LARGE_ZERR threshold: the thresholds file cannot be read"
    note = "" if same else f" ({refset.set_id}, not the run's file)"
    return value, f"LARGE_ZERR above {value:.4g}{note}"


def _spectra(path: Path, objids, refset):
    """{objid: [(band, wavelength, flux, err), ...]} on the network grid (else native pixels), and a label."""
    from .products import ProductError, open_product
    grid = None
    if refset is not None:
        try:
            from .reffiles.tables import load_wavegrid
            grid = load_wavegrid(refset.path("wavegrid"))
        except Exception:     # no usable wavegrid: show the native pixels instead
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
    return out, ("network grid" if grid is not None else "native pixels")


def spectrum_ylim(parts) -> tuple[float, float] | None:
    """y-limits that show the bulk of a spectrum: each band's pixels whose error is within twice
    the band's median error (the band ends, where the throughput falls, have large errors and
    spikes), their 1st to 99th flux percentile and their errors, padded. None without pixels."""
    values = []
    for _, _, flux, err in parts:
        flux, err = np.asarray(flux, dtype=float), np.asarray(err, dtype=float)
        ok = np.isfinite(flux) & np.isfinite(err) & (err > 0)
        if not ok.any():
            ok = np.isfinite(flux)
            values.append(flux[ok])
            continue
        bulk = ok & (err <= 2.0 * np.median(err[ok]))
        values += [flux[bulk], err[bulk]]
    values = np.concatenate(values) if values else np.zeros(0)
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    lo, hi = np.percentile(values, [0.5, 99.5])
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    pad = 0.15 * (hi - lo) + 1e-6
    return lo - pad, hi + pad


def _mark_lines(ax, z: float, wave_lo: float, wave_hi: float):
    """The rest-frame LINES at redshift z that fall on the shown pixels, labelled inside the axes."""
    span = wave_hi - wave_lo
    for name, rest in LINES:
        obs = rest * (1 + z)
        if not wave_lo <= obs <= wave_hi:
            continue
        ax.axvline(obs, color="C3", lw=0.8, ls="--")
        left = obs - wave_lo < 0.06 * span          # near the left edge: the label goes right of the line
        ax.text(obs, 0.98, name, transform=ax.get_xaxis_transform(), rotation=90, va="top",
                ha="left" if left else "right", fontsize=7, color="C3", clip_on=False,
                bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.75))


def _pz_panel(ax, prod: OutputProduct, rows, colours):
    """p(z) of the example rows as a density in z, with Z (solid), Z_ALT (dashed) and Z_TRUE (dotted)."""
    from matplotlib.lines import Line2D
    ax.set_title("p(z) of the example objects", fontsize=10)
    if prod.pz_edges is None:
        ax.text(0.5, 0.5, "no PZ column in the product\n(written with --no-pz, or by an older version)",
                ha="center", va="center", transform=ax.transAxes, fontsize=9)
        ax.set_axis_off()
        return
    pz = pz_rows(prod.path, rows) if rows else None
    if pz is None or pz.shape[-1] != prod.pz_edges.size - 1:
        ax.text(0.5, 0.5, "the PZ column cannot be read", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    cat = prod.catalog
    edges = prod.pz_edges
    centres, widths = 0.5 * (edges[1:] + edges[:-1]), np.diff(edges)
    have_alt = "Z_ALT" in cat.dtype.names
    top = 0.0
    for row, p, colour in zip(rows, pz, colours):
        density = p / widths
        top = max(top, float(np.nanmax(density)) if np.isfinite(density).any() else 0.0)
        p_alt = float(cat["P_ALT"][row]) if "P_ALT" in cat.dtype.names else float("nan")
        label = f"OBJID {int(cat['OBJID'][row])}" + (f", P_ALT {p_alt:.2f}" if np.isfinite(p_alt) and p_alt > 0
                                                      else "")
        ax.plot(centres, density, color=colour, lw=1.0, label=label)
        ax.axvline(float(cat["Z"][row]), color=colour, lw=1.0, ls="-", alpha=0.8)
        if have_alt and np.isfinite(cat["Z_ALT"][row]):
            ax.axvline(float(cat["Z_ALT"][row]), color=colour, lw=1.0, ls="--", alpha=0.8)
        if prod.truth is not None and np.isfinite(prod.truth[row]):
            ax.axvline(float(prod.truth[row]), color=colour, lw=1.2, ls=":")
    # z range: where the examples' p(z) hold all but 0.2% of their probability, and every marked z
    marks = []
    for row, p in zip(rows, pz):
        c = np.nancumsum(p)
        if c.size and c[-1] > 0:
            c = c / c[-1]
            marks += [edges[int(np.searchsorted(c, 0.001))], edges[min(int(np.searchsorted(c, 0.999)) + 1,
                                                                        edges.size - 1)]]
        marks += [float(cat["Z"][row])] + ([float(cat["Z_ALT"][row])] if have_alt else [])
        if prod.truth is not None:
            marks.append(float(prod.truth[row]))
    marks = np.asarray(marks, dtype=float)
    marks = marks[np.isfinite(marks)]
    lo, hi = (marks.min(), marks.max()) if marks.size else (edges[0], edges[-1])
    pad = 0.08 * (hi - lo) + 0.02
    ax.set_xlim(max(edges[0], lo - pad), min(edges[-1], hi + pad))
    ax.set_ylim(0, 1.3 * top if top > 0 else 1.0)
    ax.set_xlabel("z")
    ax.set_ylabel("p(z) [per unit z]")
    handles, labels = ax.get_legend_handles_labels()
    styles = [("Z", "-"), ("Z_ALT", "--")] + ([("Z_TRUE", ":")] if prod.truth is not None else [])
    handles += [Line2D([], [], color="k", ls=ls, lw=1.0) for _, ls in styles]
    labels += [name for name, _ in styles]
    ax.legend(handles, labels, fontsize=7, loc="upper right")


def plot(prod: OutputProduct, out_path: Path, reference_dir=None, fmt: str | None = None) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure
    from .durable import TempFile
    out_path = Path(out_path)
    fmt = fmt or figure_format(out_path)
    cat = prod.catalog
    z = np.asarray(cat["Z"], dtype=float)
    zerr = np.asarray(cat["ZERR"], dtype=float)
    snr = np.asarray(cat["SNR_GI"], dtype=float)
    zwarn = np.asarray(cat["ZWARN"], dtype=np.int64)
    refset, same = run_reference_set(prod, reference_dir)
    fig = Figure(figsize=(18, 10), layout="constrained")
    FigureCanvasAgg(fig)
    upper, lower = fig.subfigures(2, 1)        # each row laid out on its own: 3 panels above, 4 below
    top, bottom = upper.subplots(1, 3), lower.subplots(1, 4)
    snr_c = np.clip(np.where(np.isfinite(snr), snr, np.nan), 0.1, None)
    norm = LogNorm(vmin=max(np.nanmin(snr_c), 0.1), vmax=max(np.nanmax(snr_c), 1.0)) \
        if np.isfinite(snr_c).any() else None
    ok = zwarn == 0

    ax = top[0]
    if prod.truth is not None:
        zt = prod.truth
        for sel, marker, label in ((ok, "o", "ZWARN == 0"), (~ok, "x", "ZWARN != 0")):
            sc = ax.scatter(zt[sel], z[sel], c=snr_c[sel], cmap="viridis", norm=norm, s=10, marker=marker,
                            label=f"{label} ({int(sel.sum())})")
        hi = float(np.nanmax(np.concatenate([zt, z[np.isfinite(z)], [1.0]])))
        line = np.array([0.0, hi])
        ax.plot(line, line, "k-", lw=0.8)
        for sgn in (-1, 1):
            ax.plot(line, line + sgn * 0.02 * (1 + line), "k:", lw=0.8)
        ax.set_xlabel("Z_TRUE")
        ax.set_title("Z against the truth (dotted: |dz|/(1+z) = 0.02)", fontsize=10)
    else:
        for sel, marker, label in ((ok, "o", "ZWARN == 0"), (~ok, "x", "ZWARN != 0")):
            sc = ax.scatter(snr_c[sel], z[sel], c=snr_c[sel], cmap="viridis", norm=norm, s=10, marker=marker,
                            label=f"{label} ({int(sel.sum())})")
        ax.set_xscale("log")
        ax.set_xlabel("SNR_GI")
        ax.set_title("Z against SNR_GI (no truth given)", fontsize=10)
    ax.set_ylabel("Z")
    ax.legend(loc="upper left", fontsize=8)
    if norm is not None:
        from matplotlib.ticker import FormatStrFormatter
        bar = upper.colorbar(sc, ax=ax, label="SNR_GI")
        bar.ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        bar.ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))

    ax = top[1]
    rel = zerr / (1 + z)
    fin = np.isfinite(rel) & (rel > 0)
    threshold, threshold_label = _large_zerr(refset, same, reference_dir is not None)
    if fin.any():
        lo, hi = rel[fin].min(), rel[fin].max()
        if threshold is not None and threshold > 0:
            lo, hi = min(lo, threshold / 1.5), max(hi, threshold * 1.5)
        bins = np.logspace(np.log10(lo), np.log10(hi) + 1e-9, 40)
        ax.hist(rel[fin], bins=bins, histtype="step", color="k", label=f"all ({int(fin.sum())})")
        ax.hist(rel[fin & ok], bins=bins, histtype="stepfilled", alpha=0.4, label="ZWARN == 0")
        ax.set_xscale("log")
        ax.axvline(np.median(rel[fin]), color="C3", ls="--", lw=1, label=f"median {np.median(rel[fin]):.4f}")
        if threshold is not None:
            ax.axvline(threshold, color="C1", ls="-", lw=1.5, label=threshold_label)
        ax.legend(fontsize=8, loc="upper left")
    if threshold is None:
        ax.text(0.99, 0.99, threshold_label, transform=ax.transAxes, ha="right", va="top", fontsize=7,
                color="0.4")
    ax.set_xlabel("ZERR / (1 + Z)")
    ax.set_ylabel("objects")
    ax.set_title("calibrated uncertainty", fontsize=10)

    ax = top[2]
    s = summary(cat)
    names = ["ZWARN == 0"] + [name for _, name, _, _ in s["bits"]]
    counts = [s["n_ok"]] + [count for _, _, count, _ in s["bits"]]
    ypos = np.arange(len(names))[::-1]
    ax.barh(ypos, counts, color=["C2"] + ["C1"] * (len(names) - 1))
    ax.set_yticks(ypos, names, fontsize=8)
    for y, c in zip(ypos, counts):
        ax.text(c, y, f" {c}", va="center", fontsize=8)
    ax.set_xlabel("objects")
    ax.set_title("ZWARN bits (an object may have several)", fontsize=10)
    ax.set_xlim(0, max(counts + [1]) * 1.15)

    rows = _examples(cat)
    colours = EXAMPLE_COLOURS[:len(rows)]
    _pz_panel(bottom[0], prod, rows, colours)
    spectra, label = ({}, "")
    if prod.spectra_path is not None and rows:
        spectra, label = _spectra(prod.spectra_path, [int(cat["OBJID"][r]) for r in rows], refset)
    for i, ax in enumerate(bottom[1:]):
        if i >= len(rows) or int(cat["OBJID"][rows[i]]) not in spectra:
            ax.text(0.5, 0.5, "no spectra in the product\n(give --truth IN.fits, the run's input)"
                    if prod.spectra_path is None else "no example",
                    ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        r = rows[i]
        parts = spectra[int(cat["OBJID"][r])]
        shown = []
        for band, wave, flux, err in parts:
            ax.plot(wave, flux, lw=0.7, color="C0" if band == "GV" else "C1", label=f"{band} flux")
            ax.plot(wave, err, lw=0.7, color="0.4", label="error" if band == "GI" else None)
            wave = np.asarray(wave, dtype=float)
            shown.append(wave[np.isfinite(np.asarray(flux, dtype=float))])
        limits = spectrum_ylim(parts)
        if limits is not None:
            ax.set_ylim(*limits)
        waves = np.concatenate(shown) if shown else np.zeros(0)
        if waves.size:
            ax.set_xlim(waves.min() - 0.01 * np.ptp(waves), waves.max() + 0.01 * np.ptp(waves))
            _mark_lines(ax, z[r], waves.min(), waves.max())
        truth = "" if prod.truth is None or not np.isfinite(prod.truth[r]) else f", Z_TRUE {prod.truth[r]:.3f}"
        bits = ",".join(name for _, name, _ in ZWarn.decode(int(zwarn[r]))) or "0"
        ax.set_title(f"OBJID {int(cat['OBJID'][r])}: Z {z[r]:.3f} +- {zerr[r]:.3f}{truth}\n"
                     f"SNR_GI {snr[r]:.1f}, ZWARN {bits}", fontsize=9, color=colours[i])
        ax.set_xlabel("wavelength [Angstrom] (dashed: lines at Z)")
        ax.set_ylabel("flux, error / the object's scale" if label == "network grid"
                      else "flux, error [1e-17 erg/s/cm2/A]")
        if i == 0:
            ax.legend(fontsize=7, loc="lower left")
    n = max(s["n_objects"], 1)
    refname = str(prod.header.get(KW_REFSET) or "").split(":")[0]
    title = (f"{prod.path.name}: {s['n_objects']} objects, {s['n_ok']} ({100 * s['n_ok'] / n:.0f}%) with "
             f"ZWARN == 0" + (f", reference set {refname}" if refname else ""))
    if rows:
        shown = f"spectra on the {label}" if label else "spectra"
        title += f"\nbottom: p(z) and {shown} of the objects at the 90th, 50th and 10th percentile of SNR_GI"
    fig.suptitle(title, fontsize=11)
    try:
        with TempFile(out_path) as tmp:
            fig.savefig(tmp.path, format=fmt, dpi=90)
            tmp.commit()
    except OSError as exc:
        raise FigureError(f"cannot write the figure {out_path} ({exc.strerror or exc})") from None
    return out_path
