"""What every benchmark of the suite sets up the same way: one work directory, and in it the
simulated products, the DUMMY reference sets and the fixed product, each made once and reused.

A :class:`Workspace` makes nothing until asked. Products are keyed by size and seed (a product
of 10,000 objects asked for by two benchmarks is simulated once; a rerun with the same
``--workdir`` reuses it). The speed benchmarks use DUMMY reference sets
(``training.dummy.write_dummy_set``): untrained weights cost what trained ones cost. Accuracy
comparisons use the shipped set when it holds a trained network (:meth:`Workspace.shipped_set`).
"""
from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

log = logging.getLogger(__name__)

GOLDEN = ROOT / "tests" / "data" / "golden_input.fits"   # 24 objects, the golden test's input
PRODUCT_SEED = 102                  # the seed of every simulated product unless a benchmark names another
NETWORK_SETS = ("backbone", "bnnhead", "calibration", "thresholds", "wavegrid")


def write_repeated_product(src: Path, copies: int, path: Path, seed: int = 0) -> int:
    """``src``'s band tables (SPEC_*) repeated ``copies`` times (OBJID + k * 10^9 for copy k; copy
    k >= 1 has FLUX + ERR * N(0, 1), seeded), written to ``path``. Returns the number of objects."""
    import numpy as np
    from astropy.io import fits
    rng = np.random.default_rng(seed)
    ids = set()
    with fits.open(src) as hd:
        primary = fits.PrimaryHDU(header=hd[0].header.copy())
        tables = []
        for hdu in hd[1:]:
            if not hdu.name.startswith("SPEC_"):         # the band tables only (not TRUTH)
                continue
            data = np.asarray(hdu.data)
            parts = []
            for k in range(copies):
                part = data.copy()
                part["OBJID"] = part["OBJID"] + k * 10 ** 9
                if k:
                    part["FLUX"] = part["FLUX"] + part["ERR"] * rng.standard_normal(part["FLUX"].shape)
                parts.append(part)
            table = np.concatenate(parts)
            ids.update(int(i) for i in table["OBJID"])
            header = hdu.header.copy()
            for key in ("CHECKSUM", "DATASUM"):
                header.remove(key, ignore_missing=True)
            tables.append(fits.BinTableHDU(data=table, header=header, name=hdu.name))
    fits.HDUList([primary] + tables).writeto(path, overwrite=True, checksum=True)
    return len(ids)


class Workspace:
    """One work directory (``directory``; a temporary one, removed by :meth:`close`, when None)
    and the reference set the accuracy comparisons use (``reference_dir``; None: the shipped one)."""

    def __init__(self, directory: Path | str | None = None, reference_dir: Path | str | None = None):
        self._temporary = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="csst_sls_z_bench_") if directory is None else directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.reference_dir = reference_dir
        self._models = None

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Remove the directory if this workspace made it (a given ``directory`` is kept)."""
        if self._temporary:
            shutil.rmtree(self.directory, ignore_errors=True)

    def path(self, name: str) -> Path:
        """A subdirectory of the work directory, made if missing (a benchmark's own outputs)."""
        d = self.directory / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    # ------------------------------------------------------------------ models and grid
    def models(self):
        """(instrument, sedlib) of the shipped foundation set, loaded once."""
        if self._models is None:
            from csst_sls_z.simulation import load_models
            instrument, sedlib, _ = load_models()
            self._models = (instrument, sedlib)
        return self._models

    def grid(self):
        """The network's wavelength grid (the instrument's pixels), as the stage resamples onto it."""
        from csst_sls_z.reffiles.tables import grid_from_instrument
        return grid_from_instrument(self.models()[0])

    # ------------------------------------------------------------------ inputs
    def product(self, n: int, seed: int = PRODUCT_SEED) -> Path:
        """A Layout A product of ``n`` test-population objects with TRUTH, in one file."""
        d = self.directory / f"product_{n}_s{seed}"
        existing = sorted(d.glob("*.fits")) if d.is_dir() else []
        if existing:
            return existing[0]
        from csst_sls_z.simulation import simulate_products
        d.mkdir(parents=True, exist_ok=True)
        log.info("simulating a product of %s objects (seed %d)", f"{n:,}", seed)
        (path,) = simulate_products(n, seed, "test", n, d, *self.models(), progress=False, overwrite=True)
        return path

    def fixed_product(self, copies: int, seed: int = 1) -> Path:
        """The golden product's 24 objects repeated ``copies`` times (OBJIDs renumbered, each copy's
        FLUX moved by its ERR times a seeded normal draw): the same input on any machine, no simulator."""
        path = self.directory / f"fixed_{copies}_s{seed}.fits"
        if not path.exists():
            write_repeated_product(GOLDEN, copies, path, seed=seed)
        return path

    def dummy_set(self, network: str = "cpu") -> Path:
        """A DUMMY reference set of the ``network`` configuration (untrained weights)."""
        d = self.directory / f"refs_dummy_{network}"
        if not (d / "manifest.json").is_file():
            from csst_sls_z.training.dummy import write_dummy_set
            log.info("writing the DUMMY %s reference set", network)
            write_dummy_set(d, network=network)
        return d

    def shipped_set(self):
        """(directory, holds a trained network, label) of the set the accuracy comparisons use:
        ``reference_dir``, else the shipped current set; directory None when there is none."""
        from csst_sls_z.reffiles.sets import read_manifest, resolve_reference_dir
        try:
            d = resolve_reference_dir(self.reference_dir)
            manifest = read_manifest(d)
        except Exception as exc:                       # no usable set at all
            return None, False, f"no usable reference set ({exc})"
        types = {f.get("reftype") for f in manifest.get("files", [])}
        trained = set(NETWORK_SETS) <= types and manifest.get("pedigree", "").upper() != "DUMMY"
        return d, trained, f"{manifest.get('set_id', d.name)} (pedigree {manifest.get('pedigree', '?')})"
