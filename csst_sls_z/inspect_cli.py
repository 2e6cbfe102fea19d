"""``csst-sls-z inspect``: read an SLS_REDSHIFT product the way a person would.

    csst-sls-z inspect OUT.fits [--truth IN.fits] [--plot FILE.png] [--z-bins 0,0.5,1,1.5]
    csst-sls-z inspect --zwarn 40

Prints a summary (objects, ZWARN == 0, each ZWARN bit by name with its count and meaning,
the median ZERR / (1 + Z), the SNR_GI quartiles); against the truth (``--truth``, or a
TRUTH extension in the file, matched on OBJID) sigma_NMAD, eta, E-bar and the mean bias,
overall and in z bins, computed by ``csst_sls_z.training.metrics``. ``--plot`` writes a
figure in the format its suffix names (.png, .pdf, .svg, ...): Z against Z_TRUE coloured by
SNR_GI (Z against SNR_GI without truth), the ZERR distribution with the LARGE_ZERR threshold,
the ZWARN counts, the p(z) of three example objects with Z, Z_ALT and Z_TRUE, and their
spectra on the network grid with the lines at Z marked. ``--zwarn N`` decodes a ZWARN value
and exits. No TensorFlow.

Exit codes: 0 ok, 1 error (one sentence on stderr).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .commands import CommandError, Parser, nonneg_int, setup_logging
from .datamodel import (EXIT_ERROR, EXIT_OK, EXT_REDSHIFT, EXT_SPEC, EXT_TRUTH, KW_CALIBRATION_METHOD,
                        KW_INPUT_NAME, KW_PZ_DZ, KW_PZ_NBIN, KW_PZ_SPACE, KW_PZ_Z0, KW_REF_SHA256, KW_REF_TYPE,
                        KW_REFSET, KW_STATUS, PZ_COLUMN, ZWarn, indexed_keyword)

PROG = "csst-sls-z inspect"
DEFAULT_Z_BINS = (0.0, 0.3, 0.6, 0.9, 1.2, 1.6)
# Rest-frame lines marked on the example spectra (Angstrom, air; labels as printed).
LINES = (("[OII]", 3727.4), ("Hb", 4862.7), ("[OIII]", 5008.2), ("Ha", 6564.6), ("[SII]", 6725.0))
# Figure formats --plot writes, by file suffix (matplotlib's writers that need nothing more).
FIGURE_FORMATS = ("png", "pdf", "svg", "svgz", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp")
ZWARN_MAX = 2**31 - 1                      # the ZWARN column is int32 ('J')
EXAMPLE_COLOURS = ("C2", "C4", "C5")       # one per example object: its p(z) and its spectrum panel's title


def parser():
    p = Parser(prog=PROG, description="Summarise an SLS_REDSHIFT product (output of csst-sls-z run): ZWARN "
                "bits with counts and meanings, uncertainties, SNR; metrics against the truth; a figure. "
                "Exit 0 ok, 1 error.")
    p.add_argument("product", nargs="?", type=Path, help="an output product holding SLS_REDSHIFT")
    p.add_argument("--truth", type=Path, default=None,
                   help="product with a TRUTH extension (the run's input), matched on OBJID "
                        "(default: the TRUTH extension of PRODUCT, if any)")
    p.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                   help="write a figure here, in the format its suffix names "
                        f"({', '.join('.' + f for f in FIGURE_FORMATS if f not in ('svgz', 'jpeg', 'tiff'))})")
    p.add_argument("--z-bins", type=_edges, default=None, metavar="EDGES",
                   help="comma-separated Z_TRUE bin edges for the binned metrics "
                        f"(default: {','.join(f'{e:g}' for e in DEFAULT_Z_BINS)}, widened to the data)")
    p.add_argument("--reference-dir", type=Path, default=None,
                   help="reference set (a directory, or a shipped set's name) whose wavegrid the example "
                        "spectra are shown on and whose LARGE_ZERR threshold is marked (default: the set the "
                        "output names in REFSET when its files are the run's, else $CSST_SLS_Z_REFDIR or the "
                        "shipped set)")
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


# ---------------------------------------------------------------- reading
@dataclass
class Product:
    path: Path
    catalog: np.ndarray            # the SLS_REDSHIFT table
    header: dict                   # a few SLS_REDSHIFT header values
    truth: np.ndarray | None       # Z_TRUE per catalogue row (NaN where unmatched), or None
    truth_source: str | None
    spectra_path: Path | None      # a file holding SPEC_GV / SPEC_GI for these objects
    references: dict = field(default_factory=dict)   # reftype -> sha256 of the reference files the run used
    pz_edges: np.ndarray | None = None               # z edges of the PZ grid, when the product has a PZ column


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
        # A copy of the scalar columns (the file closes); PZ is read for the few rows drawn (pz_rows).
        scalars = [n for n in data.columns.names if n != PZ_COLUMN.name]
        columns = {n: np.asarray(data[n]) for n in scalars}
        catalog = np.empty(len(data), dtype=[(n, c.dtype, c.shape[1:]) for n, c in columns.items()])
        for n, c in columns.items():
            catalog[n] = c
        header = {k: hdu.header.get(k) for k in (KW_REFSET, KW_STATUS, KW_CALIBRATION_METHOD, KW_INPUT_NAME)}
        references = _references(hdu.header)
        pz_edges = _pz_edges(hdu.header) if PZ_COLUMN.name in data.columns.names else None
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
    return Product(path, catalog, header, truth, source, spectra_path, references, pz_edges)


def _references(header) -> dict:
    """{reftype: sha256} of the reference files an output's header lists (REFTYPnn / REFSHAnn)."""
    out = {}
    for i in range(100):
        reftype = header.get(indexed_keyword(KW_REF_TYPE, i))
        if reftype is None:
            break
        out[str(reftype).strip()] = str(header.get(indexed_keyword(KW_REF_SHA256, i), "")).strip().lower()
    return out


def _pz_edges(header) -> np.ndarray | None:
    """The z edges of the PZ grid the PZ_* keywords describe (docs/pz.md), or None without them."""
    try:
        z0, dz, nbin = float(header[KW_PZ_Z0]), float(header[KW_PZ_DZ]), int(header[KW_PZ_NBIN])
    except (KeyError, TypeError, ValueError):
        return None
    if not (nbin >= 1 and dz > 0 and np.isfinite(z0)):
        return None
    x = z0 + dz * (np.arange(nbin + 1) - 0.5)
    return np.expm1(x) if str(header.get(KW_PZ_SPACE, "z")).strip() == "ln1pz" else x


def pz_rows(path: Path, rows) -> np.ndarray | None:
    """The PZ values of catalogue ``rows`` of an output (only those rows are read), or None."""
    from astropy.io import fits
    try:
        with fits.open(path, memmap=True) as hdul:
            data = hdul[EXT_REDSHIFT].data
            return np.array(data[PZ_COLUMN.name][np.asarray(rows, dtype=np.int64)], dtype=float)
    except (OSError, KeyError, ValueError):
        return None


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
def figure_format(path: Path) -> str:
    """The figure format ``path``'s suffix names; a CommandError when it names none we write."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in FIGURE_FORMATS:
        return {"jpeg": "jpg", "tiff": "tif"}.get(suffix, suffix)
    shown = ", ".join("." + f for f in FIGURE_FORMATS if f not in ("svgz", "jpeg", "tiff"))
    what = f"its suffix .{suffix} is not a figure format" if suffix else "it has no suffix to name a format"
    raise CommandError(f"cannot write the figure {path}: {what}; name it {shown}")


def check_figure_path(path: Path) -> str:
    """Every check of ``--plot`` that needs no product: its format, its directory. Returns the format."""
    if path.is_dir():
        raise CommandError(f"cannot write the figure {path}: it is a directory")
    fmt = figure_format(path)
    if not path.parent.is_dir():
        what = "is a file, not a directory" if path.parent.exists() else "does not exist"
        raise CommandError(f"cannot write the figure {path}: directory {path.parent} {what}")
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


def run_reference_set(prod: Product, reference_dir=None):
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
                raise CommandError(" ".join(str(exc).split())) from None
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


def _pz_panel(ax, prod: Product, rows, colours):
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


def plot(prod: Product, out_path: Path, reference_dir=None, fmt: str | None = None) -> Path:
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
        bits = ",".join(name for _, name, _ in decode_zwarn(int(zwarn[r]))) or "0"
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
        fmt = check_figure_path(args.plot) if args.plot is not None else None
        if args.reference_dir is not None:
            from .reffiles.header import ReferenceFileError
            from .reffiles.sets import resolve_reference_dir
            try:
                resolve_reference_dir(args.reference_dir)
            except ReferenceFileError as exc:
                raise CommandError(" ".join(str(exc).split())) from None
        prod = read_product(args.product, args.truth)
        print(report(prod, args.z_bins))
        if args.plot is not None:
            print(f"figure: {plot(prod, args.plot, args.reference_dir, fmt)}")
    except CommandError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
