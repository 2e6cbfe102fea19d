"""Property-based fuzzing: malformed and extreme products never crash, never lose a row.

Each example is a small (1-5 object) product cut from the simulated one, mutated in
memory, written to a temporary FITS file and read back:

* ``test_fuzz_read_and_preprocess`` (N_FAST examples; a tenth of them in the default run, all
  of them in ``test_fuzz_read_and_preprocess_all``, marked slow): ``open_product`` ->
  ``iter_chunks`` -> ``preprocess_bands`` -> ``zwarn_bits``, the I/O and numba path,
  checked against an independent numpy oracle (pixel counts, repairs, flags);
* ``test_fuzz_full_stage`` (N_FULL examples, split the same way): ``RedshiftStage.run`` with one cached stage
  (network, calibration, writer included).

Invariant: a product either gives one row per object (the union of OBJIDs over GV and GI,
in order of first appearance) with the right ZWARN bits, or is refused with a ProductError
(exit code 1) of one line that names the file, exactly when the mutation made it
unreadable. Never another exception, never a lost row, never a change to the input.

Besides the mutations, each product is stored in one of several real-world ways (issue 16):
TUNITs of WAVELENGTH / FLUX / ERR, convertible (nm, um, erg/s/cm2/Angstrom, W/m2/nm) or
not (Hz, F_nu, unparseable, FLUX with a unit and ERR without); FLUX and ERR as float32,
float64 or scaled int16 / int32 (TSCAL, TZERO, TNULL for non-finite values); and FITS
checksums absent, valid or failing (read with or without ignore_checksum). The oracle sees
the values a correct reader must decode: stored * TSCAL + TZERO, times the unit's factor.

Profiles: ``ci`` (loaded when $CI is set) is derandomised, so every CI run draws the same
examples; locally the examples are random (and the failing ones are replayed from the
.hypothesis database). Both run N_FAST + N_FULL examples.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import warnings
from pathlib import Path

import fitsio
import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from csst_sls_z.datamodel import BANDS_USED, EXT_REDSHIFT, StageStatus, ZWarn
from csst_sls_z.products import ProductError, open_product

COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", derandomize=True, database=None, print_blob=True, **COMMON)
settings.register_profile("dev", **COMMON)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

N_FAST = int(os.environ.get("SLSZ_FUZZ_FAST", 1000))   # products through the reader + preprocessing + flags
N_FULL = int(os.environ.get("SLSZ_FUZZ_FULL", 200))    # products through the whole stage, network and writer
# The default run draws a tenth of them; the slow run (``-m slow``, ``--slow``) all of them.
N_FAST_DEFAULT, N_FULL_DEFAULT = max(1, N_FAST // 10), max(1, N_FULL // 10)
VECTORS = ("WAVELENGTH", "FLUX", "ERR")
REQUIRED = ("OBJID",) + VECTORS
NODATA, MISSING, BAD, OOD = (int(ZWarn.NODATA), int(ZWarn.MISSING_BAND), int(ZWarn.BAD_INPUT),
                             int(ZWarn.OUT_OF_DISTRIBUTION))
_COUNTER = itertools.count()


# ---------------------------------------------------------------------------- strategies
VALUES = [np.nan, np.inf, -np.inf, 0.0, -0.0, -1.0, 1e-30, 1e30, -1e30, 3e38, 1e300, -1e300, 5e-324, 1.7e308]
band_st = st.sampled_from(BANDS_USED)
obj_st = st.integers(0, 4)
frac_st = st.floats(0, 1)
op_st = st.one_of(
    st.tuples(st.just("value"), band_st, st.sampled_from(VECTORS), obj_st, frac_st, st.integers(1, 600),
              st.sampled_from(VALUES)),
    st.tuples(st.just("maskall"), st.sampled_from(BANDS_USED + ("both",)), obj_st,
              st.sampled_from(("ERR", "FLUX", "WAVELENGTH"))),
    st.tuples(st.just("shuffle"), band_st, obj_st, st.integers(0, 2 ** 16)),
    st.tuples(st.just("reverse"), band_st, obj_st),
    st.tuples(st.just("dupwave"), band_st, obj_st, frac_st, st.integers(2, 60)),
    # mostly all three vectors (a shorter spectrum); one of them alone makes the lengths differ
    st.tuples(st.just("shorten"), band_st, obj_st, st.integers(1, 600), st.sampled_from(("ALL",) * 3 + VECTORS)),
    st.tuples(st.just("droprow"), band_st, obj_st),
    st.tuples(st.just("dupid"), band_st, obj_st, obj_st),
    st.tuples(st.just("dropcol"), band_st, st.sampled_from(("RA", "DEC") * 2 + REQUIRED)),
    st.tuples(st.just("dropband"), band_st),
    st.tuples(st.just("dtype"), band_st, st.sampled_from(("OBJID",) + VECTORS),
              st.sampled_from(("f8", "<f8", "f4", "i4", "i2"))),
    st.tuples(st.just("byteswap"), band_st, st.sampled_from(VECTORS)),
    st.tuples(st.just("scale"), band_st, st.sampled_from([1e-30, 1e30, 1e-200, 1e200])),
)
# TUNITs: None (absent: the documented unit is assumed) or convertible ones for every band;
# now and then one band gets a unit fault (not convertible, unparseable, FLUX or ERR alone).
FLUX_UNIT = "1e-17 erg/s/cm2/Angstrom"
WAVE_UNITS = [None, None, "Angstrom", "nm", "um", "0.1 nm"]
FLUX_ERR_UNITS = [(None, None), (None, None), (FLUX_UNIT, FLUX_UNIT), ("erg/s/cm2/Angstrom", "erg/s/cm2/Angstrom"),
                  ("W/m2/nm", "erg/s/cm2/Angstrom"), ("W m-2 nm-1", "1e-20 W/m2/nm")]
UNIT_FAULTS = {"wave_hz": ("Hz", None), "wave_unparseable": ("parsec per fortnight!", None),
               "flux_f_nu": (None, ("erg/s/cm2/Hz", "erg/s/cm2/Hz")), "err_jy": (None, (FLUX_UNIT, "Jy")),
               "flux_only": (None, ("erg/s/cm2/Angstrom", None)), "err_only": (None, (None, FLUX_UNIT)),
               "unparseable": (None, ("not a unit", "not a unit"))}
# How FLUX and ERR are stored: as mutated, float32, float64, or scaled 16/32-bit integers.
STORAGE = [None, None, "f4", "f8", "i2_scaled", "i4_scaled"]
recipe_st = st.fixed_dictionaries({
    "n": st.integers(1, 5),
    "varlen": st.booleans(),
    "fitsio": st.booleans(),
    "chunk": st.integers(1, 5),
    # at least one mutation, so every one of the N_FAST + N_FULL examples is malformed or extreme
    "ops": st.lists(op_st, min_size=1, max_size=6),
    "cut": st.integers(0, 11).flatmap(lambda k: st.floats(0, 1) if k == 0 else st.none()),
    "units": st.fixed_dictionaries({b: st.tuples(st.sampled_from(WAVE_UNITS), st.sampled_from(FLUX_ERR_UNITS))
                                    for b in BANDS_USED}),
    "unit_fault": st.one_of(st.just(None), st.just(None), st.just(None), st.just(None),
                            st.tuples(band_st, st.sampled_from(sorted(UNIT_FAULTS)))),
    "storage": st.fixed_dictionaries({b: st.sampled_from(STORAGE) for b in BANDS_USED}),
    "scale_zero": st.sampled_from([0.0, 0.5, -3.0]),
    "checksum": st.sampled_from(["absent"] * 3 + ["valid"] * 3 + ["bad_datasum", "bad_checksum"]),
    "ignore_checksum": st.booleans(),
})


# ---------------------------------------------------------------------------- building products
def _base(sim_product, n_max=5):
    with fits.open(sim_product) as hdul:
        out = {}
        for band in BANDS_USED:
            data = hdul[f"SPEC_{band}"].data[:n_max]
            out[band] = {"OBJID": np.array(data["OBJID"]), "RA": np.array(data["RA"]), "DEC": np.array(data["DEC"]),
                         **{c: [np.array(row) for row in data[c]] for c in VECTORS}}
        return out


def _take_rows(table, rows):
    return {c: (v[rows] if isinstance(v, np.ndarray) else [v[i] for i in rows]) for c, v in table.items()}


def mutate(base, recipe):
    """Apply the recipe's operations to a copy of the first ``n`` objects; returns the tables
    ({band: {column: per-row scalars (array) or per-row vectors (list)}} or None for a dropped
    band) and the vector width of each fixed-length column."""
    n = recipe["n"]
    tables = {b: _take_rows(t, list(range(n))) for b, t in base.items()}
    varlen = recipe["varlen"]
    ops = []
    for op in recipe["ops"]:
        ops += [(op[0], b) + op[2:] for b in BANDS_USED] if op[1] == "both" else [op]
    for op in ops:
        kind, band = op[0], op[1]
        t = tables.get(band)
        if t is None:
            continue
        nrows = len(next(iter(t.values()))) if t else 0
        if kind == "dropband":
            tables[band] = None
        elif kind == "dropcol":
            t.pop(op[2], None)
        elif kind == "droprow":
            if nrows:
                tables[band] = _take_rows(t, [i for i in range(nrows) if i != op[2] % nrows])
        elif kind == "dupid":
            if nrows and "OBJID" in t:
                t["OBJID"][op[3] % nrows] = t["OBJID"][op[2] % nrows]
        elif kind == "dtype":
            col, dtype = op[2], op[3]
            if col in t:
                if col == "OBJID" and dtype.startswith("f"):
                    dtype = "f8"                  # ids stay integers (and exact)
                t[col] = (t[col].astype(dtype) if isinstance(t[col], np.ndarray)
                          else [r.astype(dtype) for r in t[col]])
        elif kind == "byteswap":
            if op[2] in t:
                t[op[2]] = [r.byteswap() for r in t[op[2]]]
        elif kind == "scale":
            for col in ("FLUX", "ERR"):
                if col in t:
                    t[col] = [r.astype(np.float64) * op[2] for r in t[col]]    # as float64: 1e-200 stays
        elif kind == "shorten":
            k, which = op[3], op[4]
            cols = [c for c in (VECTORS if which == "ALL" else (which,)) if c in t]
            rows = range(nrows) if not varlen else [op[2] % nrows] if nrows else []
            for c in cols:
                for i in rows:
                    r = t[c][i]
                    t[c][i] = r[: max(len(r) - k, 0 if varlen else 1)]
        else:                                    # pixel-level edits of one object's vectors
            if not nrows:
                continue
            i = op[2] % nrows if kind != "value" else op[3] % nrows
            present = [c for c in VECTORS if c in t]
            npix = min(len(t[c][i]) for c in present) if present else 0
            if kind == "value":
                col = op[2]
                if col in t and len(t[col][i]):
                    r = t[col][i].copy()
                    a = int(op[4] * len(r))
                    r[a:a + op[5]] = np.full(len(r[a:a + op[5]]), op[6]).astype(r.dtype)
                    t[col][i] = r
            elif kind == "maskall" and op[3] in t:          # a whole band of one object unusable
                r = t[op[3]][i]
                bad = {"ERR": 0.0, "FLUX": np.nan, "WAVELENGTH": 1e5}[op[3]]
                t[op[3]][i] = np.full(len(r), bad).astype(r.dtype)
            elif kind in ("shuffle", "reverse") and npix:
                perm = (np.random.default_rng(op[3]).permutation(npix) if kind == "shuffle"
                        else np.arange(npix)[::-1])
                for c in present:
                    r = t[c][i].copy()
                    r[:npix] = r[:npix][perm]
                    t[c][i] = r
            elif kind == "dupwave" and "WAVELENGTH" in t and len(t["WAVELENGTH"][i]):
                r = t["WAVELENGTH"][i].copy()
                a = int(op[3] * (len(r) - 1))
                r[a:a + op[4]] = r[a]
                t["WAVELENGTH"][i] = r
    return tables


# ---------------------------------------------------------------------------- storing: units, types, scaling
def _unit_factor(text, col):
    """Factor from the TUNIT ``text`` to the internal unit; 1.0 for no unit, None if unusable."""
    import astropy.units as u
    if text is None:
        return 1.0
    target = "Angstrom" if col == "WAVELENGTH" else FLUX_UNIT
    try:
        return float(u.Unit(text, parse_strict="raise").to(u.Unit(target)))
    except (ValueError, TypeError, u.UnitsError):
        return None


def encode(tables, recipe):
    """How the mutated tables are stored, and what a correct reader must decode from them.

    Returns (stored tables, decoded tables, header cards {band: {column: {TUNIT, TSCAL, ...}}},
    units_bad, units_assumed). ``decoded`` holds float64 values: stored (raw * TSCAL + TZERO,
    TNULL -> NaN) times the unit's factor, computed as the reader must.
    """
    stored, decoded, cards = {}, {}, {}
    units_bad = units_assumed = False
    for band, t in tables.items():
        if t is None or not t:
            stored[band] = decoded[band] = t
            continue
        wave_unit, (flux_unit, err_unit) = recipe["units"][band]
        if recipe["unit_fault"] is not None and recipe["unit_fault"][0] == band:
            wave_fault, flux_err_fault = UNIT_FAULTS[recipe["unit_fault"][1]]
            wave_unit = wave_fault or wave_unit
            flux_unit, err_unit = flux_err_fault or (flux_unit, err_unit)
        units = {"WAVELENGTH": wave_unit, "FLUX": flux_unit, "ERR": err_unit}
        s_t, d_t, c_t = dict(t), dict(t), {}
        if all(c in t for c in VECTORS):       # the reader gets this far only with all three columns
            units_bad |= (flux_unit is None) != (err_unit is None)
            units_assumed |= any(units[c] is None for c in VECTORS)
        for col in VECTORS:
            if col not in t:
                continue
            factor = _unit_factor(units[col], col)
            units_bad |= factor is None
            factor = 1.0 if factor is None else factor
            c_t[col] = {"TUNIT": units[col]} if units[col] is not None else {}
            rows = t[col] if isinstance(t[col], list) else None
            values = rows if rows is not None else [t[col]]
            storage = recipe["storage"][band] if col in ("FLUX", "ERR") else None
            if factor != 1.0:        # the same numbers, in the declared unit, in the column's type
                values = [(r.astype(np.float64) / factor).astype(r.dtype) for r in values]
            if storage in ("f4", "f8"):
                values = [r.astype(storage) for r in values]
            if storage in ("i2_scaled", "i4_scaled"):
                dtype = np.dtype("i2" if storage == "i2_scaled" else "i4")
                info = np.iinfo(dtype)
                zero = recipe["scale_zero"]
                finite = [np.asarray(r, np.float64)[np.isfinite(np.asarray(r, np.float64))] for r in values]
                span = max([float(np.abs(f - zero).max()) for f in finite if f.size] + [0.0])
                scal = float(f"{span / (info.max - 1):.6g}") if 0 < span < 1e300 else 0.0
                scal = scal if np.isfinite(scal) and scal > 0 else 1.0     # 6 digits: the card holds it exactly
                raws = []
                for r in values:
                    x = np.asarray(r, np.float64)
                    q = np.full(x.shape, float(info.min))
                    ok = np.isfinite(x)
                    q[ok] = np.clip(np.round((x[ok] - zero) / scal), info.min + 1, info.max)
                    raws.append(q.astype(dtype))
                values = raws
                c_t[col].update({"TSCAL": scal, "TZERO": zero, "TNULL": int(info.min)})
                dec = []
                for r in raws:
                    x = r.astype(np.float64) * scal + zero
                    x[r == info.min] = np.nan
                    dec.append(x)
            else:
                dec = [np.asarray(r).astype(np.float64) for r in values]
            if factor != 1.0:
                with np.errstate(over="ignore", under="ignore", invalid="ignore"):
                    dec = [x * factor for x in dec]
            s_t[col] = values if rows is not None else values[0]
            d_t[col] = dec if rows is not None else dec[0]
        stored[band], decoded[band], cards[band] = s_t, d_t, c_t
    return stored, decoded, cards, units_bad, units_assumed


def _finish_file(path, cards, recipe):
    """Write the TUNIT/TSCAL/TZERO/TNULL cards, then the checksums (valid, or made to fail)."""
    with fitsio.FITS(str(path), "rw") as f:
        for hdu in f[1:]:
            band = (hdu.get_extname() or "").replace("SPEC_", "")
            names = [c.upper() for c in hdu.get_colnames()]
            for col, keys in cards.get(band, {}).items():
                n = names.index(col) + 1
                for key, value in keys.items():
                    hdu.write_key(f"{key}{n}", value)
        if recipe["checksum"] != "absent":
            for hdu in f:
                hdu.write_checksum()
        last = f[len(f) - 1]
        if recipe["checksum"] == "bad_datasum":
            last.write_key("DATASUM", "12345")
        elif recipe["checksum"] == "bad_checksum":
            last.write_key("CHECKSUM", "0000000000000000")


def write_product(path, tables, recipe, cards=None):
    """Write the tables as a Layout A product (fitsio for fixed-length tables when asked)."""
    use_fitsio = recipe["fitsio"] and not recipe["varlen"]
    hdus = [fits.PrimaryHDU()]
    if use_fitsio:
        with fitsio.FITS(str(path), "rw", clobber=True) as f:
            f.write(None, header={"TELESCOP": "CSST"})
            for band, t in tables.items():
                if t is None:
                    continue
                nrows = len(next(iter(t.values()))) if t else 0
                if not t:
                    continue
                descr = []
                for c, v in t.items():
                    if isinstance(v, np.ndarray):
                        descr.append((c, v.dtype))
                    else:
                        width = len(v[0]) if v else 1
                        descr.append((c, v[0].dtype if v else np.float32, (width,)))
                arr = np.zeros(nrows, dtype=descr)
                for c, v in t.items():
                    arr[c] = v if isinstance(v, np.ndarray) else (np.stack(v) if v else arr[c])
                f.write(arr, extname=f"SPEC_{band}")
        _finish_file(path, cards or {}, recipe)
        return
    for band, t in tables.items():
        if t is None or not t:
            continue
        cols = []
        for c, v in t.items():
            if isinstance(v, np.ndarray):
                cols.append(fits.Column(name=c, format=_letter(v.dtype), array=v))
            elif recipe["varlen"]:
                obj = np.empty(len(v), dtype=object)
                for i, r in enumerate(v):
                    obj[i] = r
                letter = _letter(v[0].dtype) if v else "E"
                cols.append(fits.Column(name=c, format=f"P{letter}()", array=obj))
            else:
                arr = np.stack(v) if v else np.zeros((0, 1), np.float32)
                cols.append(fits.Column(name=c, format=f"{arr.shape[1]}{_letter(arr.dtype)}", array=arr))
        hdus.append(fits.BinTableHDU.from_columns(cols, name=f"SPEC_{band}"))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    _finish_file(path, cards or {}, recipe)


def _letter(dtype):
    return {"f8": "D", "f4": "E", "i2": "I", "i4": "J", "i8": "K"}[np.dtype(dtype).str[1:]]


def truncate(path, frac):
    """Cut the file inside an HDU (never exactly at an HDU boundary, where it would stay valid)."""
    raw = Path(path).read_bytes()
    with fitsio.FITS(str(path)) as f:
        bounds = {f[i].get_offsets()["header_start"] for i in range(len(f))} | {len(raw)}
    cut = min(int(frac * len(raw)), len(raw) - 1)
    while cut in bounds:
        cut -= 1
    Path(path).write_bytes(raw[:max(cut, 0)])


# ---------------------------------------------------------------------------- the oracle
class Expected:
    """What a correct reader must make of the mutated tables (numpy only, independent of the package)."""

    def __init__(self, tables, recipe, grid, units_bad=False, units_assumed=False):
        present = {b: t for b, t in tables.items() if t is not None and t}
        bad_sum = recipe["checksum"].startswith("bad")
        self.checksum_state = "FAILED" if bad_sum else "VALID" if recipe["checksum"] == "valid" else "ABSENT"
        self.units_assumed = units_assumed
        self.error = (recipe["cut"] is not None or not present or units_bad
                      or (bad_sum and not recipe["ignore_checksum"]))
        for t in present.values():
            if any(c not in t for c in REQUIRED):
                self.error = True
            elif any(not (len(w) == len(f) == len(e)) for w, f, e in zip(*(t[c] for c in VECTORS))):
                self.error = True
        if self.error:
            return
        self.objid, seen = [], set()
        self.dups = set()
        first = {}
        for band in BANDS_USED:
            t = present.get(band)
            first[band] = {}
            if t is None:
                continue
            for i, oid in enumerate(t["OBJID"].astype(np.int64)):
                oid = int(oid)
                if oid in first[band]:
                    self.dups.add(oid)
                    continue
                first[band][oid] = i
                if oid not in seen:
                    seen.add(oid)
                    self.objid.append(oid)
        self.npix = {b: np.zeros(len(self.objid), int) for b in BANDS_USED}
        self.repair = np.zeros(len(self.objid), bool)
        self.extreme = np.zeros(len(self.objid), bool)
        for k, oid in enumerate(self.objid):
            fmax, emin = 0.0, np.inf
            for band in BANDS_USED:
                if oid not in first[band]:
                    continue
                i = first[band][oid]
                w, f, e = (np.asarray(present[band][c][i], np.float64) for c in VECTORS)
                edges = grid.edges(band)
                with np.errstate(invalid="ignore"):
                    finite = np.isfinite(w) & np.isfinite(f) & np.isfinite(e)
                    valid = finite & (e > 0) & (w >= edges[0]) & (w <= edges[-1])
                    self.npix[band][k] = len(np.unique(w[valid]))
                    unsorted = len(w) > 1 and bool(np.any(~(w[1:] > w[:-1])))
                    marked = np.isfinite(e) & (e <= 0)
                self.repair[k] |= unsorted or bool(np.any(~finite & ~marked))
                if valid.any():
                    fmax = max(fmax, np.abs(f[valid]).max(), e[valid].max())
                    emin = min(emin, e[valid].min())
            self.extreme[k] = fmax / emin > 1e30 if np.isfinite(emin) else False
        self.dup_mask = np.isin(self.objid, list(self.dups))


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _check_refusal(reason, path):
    assert "\n" not in reason and Path(path).name in reason, reason
    assert "unexpected failure" not in reason, reason


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def one_numba_thread():
    """Tiny products: the parallel kernels' thread start-up would cost more than the work."""
    import numba
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)


@pytest.fixture(scope="module")
def base(sim_product):
    return _base(sim_product)


@pytest.fixture(scope="module")
def refs(dummy_refset):
    from csst_sls_z.reffiles.tables import load_thresholds, load_wavegrid
    return load_wavegrid(dummy_refset / "wavegrid.fits"), load_thresholds(dummy_refset / "thresholds.fits")


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def stage(dummy_stage):
    return dummy_stage               # one network for the session (conftest), shared with test_robustness


def _events(recipe):
    """Which real-world storage the example drew (shown by --hypothesis-show-statistics)."""
    declared = any(u is not None for w, fe in recipe["units"].values() for u in (w,) + fe)
    fault = recipe["unit_fault"]
    event(f"units: {'fault ' + fault[1] if fault else 'declared' if declared else 'absent'}")
    for storage in set(recipe["storage"].values()) - {None}:
        event(f"FLUX/ERR stored as {storage}")
    event(f"checksum {recipe['checksum']}{', ignored' if recipe['ignore_checksum'] else ''}")


def _make(base, recipe, fuzz_dir, grid):
    path = fuzz_dir / f"product_{next(_COUNTER)}.fits"
    _events(recipe)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        tables = mutate(base, recipe)
        stored, decoded, cards, units_bad, units_assumed = encode(tables, recipe)
        expected = Expected(decoded, recipe, grid, units_bad, units_assumed)
        write_product(path, stored, recipe, cards)
    if recipe["cut"] is not None:
        truncate(path, recipe["cut"])
    return path, expected


# ---------------------------------------------------------------------------- properties
def _fuzz_read_and_preprocess(recipe, base, refs, fuzz_dir):
    grid, thresholds = refs
    path, exp = _make(base, recipe, fuzz_dir, grid)
    try:
        _read_and_preprocess(recipe, path, exp, grid, thresholds)
    finally:
        path.unlink()


test_fuzz_read_and_preprocess = settings(max_examples=N_FAST_DEFAULT)(
    given(recipe=recipe_st)(_fuzz_read_and_preprocess))
test_fuzz_read_and_preprocess_all = pytest.mark.slow(settings(max_examples=N_FAST)(
    given(recipe=recipe_st)(_fuzz_read_and_preprocess)))


def _read_and_preprocess(recipe, path, exp, grid, thresholds):
    from csst_sls_z.preprocess import preprocess_bands
    from csst_sls_z.quality import ZwarnInputs, zwarn_bits
    before = _sha(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open_product(path, ignore_checksum=recipe["ignore_checksum"]) as reader:
                assert reader.checksum_state == exp.checksum_state
                assert bool(reader.units_assumed) == exp.units_assumed
                objid = reader.objid.tolist()
                dups = set(reader.duplicate_objids.tolist())
                npix = {b: [] for b in BANDS_USED}
                repaired, cover, snr_gi = [], [], []
                for sl, bands in reader.iter_chunks(recipe["chunk"]):
                    pp = preprocess_bands(bands, grid, sl.stop - sl.start)
                    assert np.all(np.isfinite(pp.x))                      # the network never sees NaN/inf
                    assert np.all(pp.x[~pp.valid] == 0)
                    for b in BANDS_USED:
                        npix[b].extend(pp.npix[b].tolist())
                    repaired.extend(pp.repaired.tolist())
                    cover.extend(pp.coverage.tolist())
                    snr_gi.extend(pp.snr["GI"].tolist())
    except ProductError as exc:
        event("refused")
        assert exp.error, f"a readable product was refused: {exc}"
        _check_refusal(str(exc), path)
        return
    finally:
        assert _sha(path) == before
    assert not exp.error, "an unreadable product was accepted"
    event(f"read: {'no objects' if not objid else 'objects'}")
    for name, flag in (("a repaired object", exp.repair.any()), ("a duplicate OBJID", bool(exp.dups)),
                       ("an object without data", (exp.npix["GV"] + exp.npix["GI"] == 0).any()),
                       ("an object missing a band", (exp.npix["GV"] * exp.npix["GI"] == 0).any()),
                       ("extreme values", exp.extreme.any())):
        if flag:
            event(f"read: {name}")
    assert objid == exp.objid                                            # one row per object, none lost
    assert dups == exp.dups
    for b in BANDS_USED:
        np.testing.assert_array_equal(npix[b], exp.npix[b], err_msg=b)
    repaired = np.array(repaired, bool)
    assert np.all(repaired[exp.repair])                                  # every repair is reported
    assert np.all(exp.repair[repaired] | exp.extreme[repaired])          # and only real ones
    n = len(objid)
    nan = np.full(n, np.nan)
    zwarn = zwarn_bits(ZwarnInputs(npix_gv=np.array(npix["GV"]), npix_gi=np.array(npix["GI"]),
                                   coverage=np.array(cover), snr_gi=np.array(snr_gi), z=nan, z_lo=nan, z_hi=nan,
                                   zerr=nan, ood_distance=nan, repaired=repaired), thresholds)
    gv0, gi0 = exp.npix["GV"] == 0, exp.npix["GI"] == 0
    np.testing.assert_array_equal(zwarn & NODATA > 0, gv0 & gi0)
    np.testing.assert_array_equal(zwarn & MISSING > 0, gv0 | gi0)
    np.testing.assert_array_equal(zwarn & BAD > 0, repaired)


def _fuzz_full_stage(recipe, base, refs, stage, fuzz_dir):
    grid, _ = refs
    path, exp = _make(base, recipe, fuzz_dir, grid)
    out = path.with_name(path.stem + "_out.fits")
    if recipe["ignore_checksum"]:
        import copy
        stage = copy.copy(stage)                  # the same network, another parameter
        stage.params = {**stage.params, "ignore_checksum": True}
    try:
        _full_stage(stage, path, out, exp, fuzz_dir)
    finally:
        path.unlink()
        out.unlink(missing_ok=True)


test_fuzz_full_stage = settings(max_examples=N_FULL_DEFAULT)(given(recipe=recipe_st)(_fuzz_full_stage))
test_fuzz_full_stage_all = pytest.mark.slow(settings(max_examples=N_FULL)(given(recipe=recipe_st)(_fuzz_full_stage)))


def _full_stage(stage, path, out, exp, fuzz_dir):
    before = _sha(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stage.run([path], out)
    assert _sha(path) == before
    assert not [p for p in fuzz_dir.iterdir() if p.name.startswith(".")]    # no temporary file left
    event(f"stage exit code {result.exit_code}")
    if exp.error:
        assert result.exit_code == 1 and result.status is StageStatus.ERROR and not out.exists()
        assert len(result.failures) == 1
        _check_refusal(result.failures[0][1], path)
        return
    assert not result.failures, result.failures
    if not exp.objid:
        assert result.exit_code == 3 and not out.exists()
        return
    assert result.exit_code == 0
    with fits.open(out) as hdul:
        cat = hdul[EXT_REDSHIFT].data
        for hdr in (hdul[0].header, hdul[EXT_REDSHIFT].header):
            assert hdr["INCHKSUM"] == exp.checksum_state and hdr["UNITDFLT"] == exp.units_assumed
        assert cat["OBJID"].tolist() == exp.objid
        zwarn = cat["ZWARN"]
        np.testing.assert_array_equal(cat["NPIX_GV"], exp.npix["GV"])
        np.testing.assert_array_equal(cat["NPIX_GI"], exp.npix["GI"])
        nodata = (exp.npix["GV"] == 0) & (exp.npix["GI"] == 0)
        np.testing.assert_array_equal(zwarn & NODATA > 0, nodata)
        np.testing.assert_array_equal(zwarn & MISSING > 0, (exp.npix["GV"] == 0) | (exp.npix["GI"] == 0))
        assert np.all(zwarn[exp.repair | exp.dup_mask] & BAD)
        assert np.all(np.isnan(cat["Z"][nodata]))
        unmeasured = ~np.isfinite(cat["Z"])
        assert np.all(zwarn[unmeasured] & (NODATA | OOD))                # never a NaN Z with no flag
        assert result.summary["n_objects"] == len(exp.objid)
