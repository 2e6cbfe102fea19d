"""The redshift stage: extracted GV/GI spectra in, SLS_REDSHIFT catalogs out.

A thin class in the style of CSST / JWST pipeline steps: its parameters and their
defaults sit in one place (``RedshiftStage.spec``), it declares the reference types it
needs, and ``run()`` returns a :class:`StageResult` with a status. The science lives in
plain functions: ``products`` (I/O), ``preprocess`` (numba), ``network`` (TensorFlow,
imported only here, only when needed), ``calibration`` and ``quality``.
"""
from __future__ import annotations

import datetime as _dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .datamodel import (KW_INPUT_NAME, KW_INPUT_SHA256, REDSHIFT_COLUMNS, StageStatus, ZWarn,
                        empty_redshift_table)

log = logging.getLogger(__name__)

DEPENDENCIES = ("numpy", "numba", "tensorflow", "tensorflow_probability", "astropy", "fitsio", "scipy")


def input_cards(path, sha256: str | None = None) -> list[tuple[str, object, str]]:
    """The input product's identity, so an output can be traced to (and checked against) its input.

    ``sha256``: the digest of the file as opened (``ProductReader.sha256``), else the path is hashed."""
    from .reference import sha256_file
    # FITS headers hold ASCII only: a non-ASCII file name is kept with backslash escapes.
    name = Path(path).name.encode("ascii", "backslashreplace").decode("ascii")
    return [(KW_INPUT_NAME, name[:68], "input product"),
            (KW_INPUT_SHA256, sha256 or sha256_file(path), "sha256 of the input product")]


@dataclass
class StageResult:
    status: StageStatus
    outputs: list = field(default_factory=list)       # written files, in input order
    failures: list = field(default_factory=list)      # (input path, one-sentence reason)
    summary: dict = field(default_factory=dict)       # n_objects, zwarn counts, timings
    message: str = ""

    @property
    def exit_code(self) -> int:
        from .datamodel import EXIT_ERROR, EXIT_NOTHING_TO_DO, EXIT_OK
        if self.status is StageStatus.NO_DATA:
            return EXIT_NOTHING_TO_DO
        if self.status is StageStatus.ERROR or self.failures:
            return EXIT_ERROR
        return EXIT_OK


class RedshiftStage:
    """Measure redshifts with the frozen CNN + MNF network and Beta-calibrated uncertainties."""

    name = "csst_sls_z"
    reference_types = ("wavegrid", "backbone", "bnnhead", "calibration", "thresholds")
    # name: (default, help). The one place a parameter and its default are declared.
    spec = {
        "samples": (200, "BNN samples per spectrum"),
        "seed": (0, "seed of the BNN sampling noise"),
        "chunk_size": (4096, "objects per chunk streamed through memory"),
        "catalog_only": (False, "write only the primary header and SLS_REDSHIFT"),
        "overwrite": (False, "replace existing outputs"),
        "reference_dir": (None, "reference set directory (default: $CSST_SLS_Z_REFDIR, else the shipped set)"),
        "reference_overrides": (None, "dict reftype -> path, replacing single reference files"),
        "ignore_checksum": (False, "process inputs whose CHECKSUM/DATASUM fails (the output says INCHKSUM='FAILED')"),
    }

    def __init__(self, **params):
        unknown = set(params) - set(self.spec)
        if unknown:
            raise TypeError(f"unknown stage parameters {sorted(unknown)}")
        self.params = {k: params.get(k, v[0]) for k, v in self.spec.items()}
        if int(self.params["samples"]) < 1:
            raise ValueError("samples must be at least 1")
        if int(self.params["chunk_size"]) < 1:
            raise ValueError("chunk_size must be at least 1")
        self._refs = None
        self._sampler = None

    # ------------------------------------------------------------ reference files
    def load_references(self):
        """Validate (sha256, schema) and load every reference file, before any spectrum is read."""
        if self._refs is None:
            from .reference import load_reference_set
            from .refdata import load_calibration, load_thresholds, load_wavegrid
            refset = load_reference_set(self.params["reference_dir"], required=self.reference_types,
                                        overrides=self.params["reference_overrides"])
            for reftype in self.reference_types:
                log.info("reference %-11s %s (sha256 %s)", reftype, refset.path(reftype), refset.sha256[reftype][:16])
            self._refs = {"set": refset, "grid": load_wavegrid(refset.path("wavegrid")),
                          "calibration": load_calibration(refset.path("calibration")),
                          "thresholds": load_thresholds(refset.path("thresholds"))}
        return self._refs

    def sampler(self):
        if self._sampler is None:
            from .network.loader import load_sampler
            self._sampler, cfg = load_sampler(self.load_references()["set"], int(self.params["samples"]),
                                              int(self.params["seed"]))
            if cfg.input_length != self.load_references()["grid"].length:
                from .reffile import ReferenceFileError
                raise ReferenceFileError(
                    f"backbone expects {cfg.input_length} input pixels, the wavegrid file has "
                    f"{self.load_references()['grid'].length}")
        return self._sampler

    # ------------------------------------------------------------ science on one chunk
    def measure_chunk(self, bands: dict, n: int, chunk_index: int) -> np.ndarray:
        from .calibration import calibrated_summary
        from .preprocess import preprocess_bands
        from .quality import zwarn_bits
        refs = self.load_references()
        cat = empty_redshift_table(n)
        pp = preprocess_bands(bands, refs["grid"], n)
        cat["SNR_GV"], cat["SNR_GI"] = pp.snr["GV"], pp.snr["GI"]
        cat["NPIX_GV"], cat["NPIX_GI"] = pp.npix["GV"], pp.npix["GI"]
        measurable = (pp.npix["GV"] > 0) | (pp.npix["GI"] > 0)
        ood = np.full(n, np.nan)
        if measurable.any():
            pred = self.sampler().predict(pp.x[measurable], chunk_index=chunk_index, return_features=True)
            cal = refs["calibration"]
            calib = cal.beta if cal.method == "beta" else cal.scale
            summ = calibrated_summary(calib, pred.mean.astype(np.float64), pred.sigma.astype(np.float64))
            cat["Z"][measurable] = summ["Z"]
            cat["Z_LO"][measurable] = summ["Z_LO"]
            cat["Z_HI"][measurable] = summ["Z_HI"]
            cat["ZERR"][measurable] = summ["ZERR"]
            cat["Z_CNN"][measurable] = pred.z_cnn
            cat["ZERR_RAW"][measurable] = pred.sigma
            ood[measurable] = refs["thresholds"].ood_distance(pred.features.astype(np.float64))
        cat["ZWARN"] = zwarn_bits(pp.npix["GV"], pp.npix["GI"], pp.coverage, pp.snr["GI"], cat["Z"],
                                  cat["Z_LO"], cat["Z_HI"], cat["ZERR"], pp.repaired, ood, refs["thresholds"])
        return cat

    # ------------------------------------------------------------ one file
    def process_file(self, path: Path, out_path: Path) -> dict:
        from .products import open_product, write_redshift_product
        t0 = time.time()
        from .quality import zwarn_counts
        # The file is opened once: it is hashed, measured and copied into the output through
        # the same descriptor, so the output describes one file even if the path is replaced.
        with open_product(path, ignore_checksum=bool(self.params["ignore_checksum"])) as reader:
            identity = input_cards(path, reader.sha256()) + reader.header_cards()
            n = reader.n_objects
            if n == 0:
                return {"n_objects": 0}
            catalog = empty_redshift_table(n)
            catalog["OBJID"] = reader.objid
            catalog["RA"], catalog["DEC"] = reader.ra, reader.dec
            for c, (sl, bands) in enumerate(reader.iter_chunks(int(self.params["chunk_size"]))):
                chunk = self.measure_chunk(bands, sl.stop - sl.start, c)
                for col in REDSHIFT_COLUMNS:
                    if col.name not in ("OBJID", "RA", "DEC"):
                        catalog[col.name][sl] = chunk[col.name]
            dup = np.isin(catalog["OBJID"], reader.duplicate_objids)
            catalog["ZWARN"][dup] |= int(ZWarn.BAD_INPUT)
            counts = zwarn_counts(catalog["ZWARN"])
            status = StageStatus.PERFECT if counts["OK"] == n else StageStatus.WARNING
            write_redshift_product(out_path, path, catalog, self.provenance_cards(status) + identity,
                                   catalog_only=bool(self.params["catalog_only"]),
                                   overwrite=bool(self.params["overwrite"]), source=reader)
        log.info("%s: %d objects, %d usable, %.1f s -> %s", path, n, counts["OK"], time.time() - t0, out_path)
        return {"n_objects": n, "zwarn": counts, "status": status.value, "wall_s": time.time() - t0}

    def provenance_cards(self, status: StageStatus):
        """The cards every output of this stage carries (the input's own are ``input_cards``)."""
        import importlib.metadata as md
        refs = self.load_references()
        refset = refs["set"]
        cards = [("SLSZVER", __version__, "csst_sls_z version"),
                 ("STAGE", self.name, "pipeline stage"),
                 ("REFSET", refset.manifest_id[:68], "reference-set manifest id"),
                 ("REFPEDIG", refset.pedigree, "reference-set pedigree"),
                 ("CALMETH", refs["calibration"].method, "uncertainty calibration applied"),
                 ("STATUS", status.value, "stage status for this file"),
                 ("DATE-RED", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), "UTC of the run")]
        for i, reftype in enumerate(sorted(refset.paths)):
            cards.append((f"REFTYP{i:02d}", reftype, "reference type"))
            cards.append((f"REFNAM{i:02d}", refset.paths[reftype].name[:68], "reference file"))
            cards.append((f"REFSHA{i:02d}", (refset.sha256.get(reftype) or "")[:64], ""))
        for i, dep in enumerate(DEPENDENCIES):
            try:
                version = md.version(dep.replace("_", "-"))
            except md.PackageNotFoundError:
                version = "absent"
            cards.append((f"DEPNAM{i:02d}", dep, "dependency"))
            cards.append((f"DEPVER{i:02d}", version, "its version"))
        for key, (default, _) in self.spec.items():
            value = self.params[key]
            if value != default and key in ("samples", "seed", "chunk_size", "catalog_only"):
                cards.append((f"P_{key[:6].upper()}", value if not isinstance(value, bool) else int(value),
                              f"parameter {key} (default {default})"))
        return cards

    # ------------------------------------------------------------ the run
    def run(self, inputs, output) -> StageResult:
        """Process ``inputs`` (paths); ``output`` is a file (one input) or a directory."""
        from .products import ProductError
        from .reffile import ReferenceFileError
        inputs = [Path(p) for p in inputs]
        t0 = time.time()
        try:
            self.load_references()
            self.sampler()      # the network weights too (shapes): refused before any spectrum is read
        except ReferenceFileError as exc:
            log.error("%s", exc)
            return StageResult(StageStatus.ERROR, message=str(exc))
        targets = output_paths(inputs, Path(output))
        if isinstance(targets, str):
            log.error("%s", targets)
            return StageResult(StageStatus.ERROR, message=targets)
        result = StageResult(StageStatus.PERFECT)
        totals = {flag.name: 0 for flag in ZWarn}
        totals["OK"] = 0
        n_total = 0
        per_file = {}
        for path, out_path in zip(inputs, targets):
            try:
                info = self.process_file(path, out_path)
            except (ProductError, ReferenceFileError, FileExistsError, OSError) as exc:
                reason = " ".join(str(exc).split()) or type(exc).__name__
                log.error("%s", reason)
                result.failures.append((str(path), reason))
                continue
            except Exception as exc:      # a bug, not bad input: still one line, and the batch goes on
                reason = (f"unexpected failure on input {path} ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())})")
                log.error("%s", reason)
                log.debug("traceback of the unexpected failure on %s", path, exc_info=True)
                result.failures.append((str(path), reason))
                continue
            per_file[str(path)] = info
            if info["n_objects"]:
                result.outputs.append(str(out_path))
                n_total += info["n_objects"]
                for k, v in info["zwarn"].items():
                    totals[k] += v
        result.summary = {"n_files": len(inputs), "n_objects": n_total, "zwarn_counts": totals,
                          "files": per_file, "wall_s": time.time() - t0}
        if result.failures and not result.outputs:
            result.status = StageStatus.ERROR
            result.message = "; ".join(r for _, r in result.failures)
        elif n_total == 0 and not result.failures:
            result.status = StageStatus.NO_DATA
            result.message = "no spectra in the input"
        elif result.failures or totals["OK"] < n_total:
            result.status = StageStatus.WARNING
            result.message = (f"{len(result.failures)} file(s) failed" if result.failures
                              else f"{n_total - totals['OK']} of {n_total} objects flagged")
        return result


def output_name(path) -> str:
    """Directory mode: ``<stem>_slsz.fits``, the stem being the whole file name less its FITS and
    compression suffixes (``sky.north.fits.gz`` -> ``sky.north_slsz.fits``), so distinct names stay distinct."""
    from .products import _stem_of
    return f"{_stem_of(Path(path))}_slsz.fits"


def output_paths(inputs, output: Path, unique: bool = True):
    """One output per input: the given file for a single input, else DIR/<stem>_slsz.fits. A str is an error.

    ``unique``: two inputs with the same output (``a.fits`` and ``a.fits.gz``, or one name in
    two directories) are refused, as is an output that is one of the inputs, before any work.
    """
    from .products import missing_directory_reason
    if len(inputs) == 1 and not output.is_dir() and output.suffix.lower() in (".fits", ".fit", ".fz"):
        targets = [output]
    elif output.is_dir():
        targets = [output / output_name(p) for p in inputs]
    else:
        if output.exists() or len(inputs) > 1 or not output.suffix:
            return missing_directory_reason(output)
        return f"output {output} must be a .fits file or an existing directory"
    for p, t in zip(inputs, targets):
        why = missing_directory_reason(t.parent)
        if why:
            return why
        if t.resolve() == p.resolve():
            return f"output {t} would overwrite its input"
    if unique:
        resolved_inputs = {Path(p).resolve(): p for p in inputs}
        owner = {}
        for p, t in zip(inputs, targets):
            key = t.resolve()
            if key in owner:
                return (f"inputs {owner[key]} and {p} would both be written to {t}; rename one of them "
                        f"(directory mode names each output <stem>_slsz.fits)")
            if key in resolved_inputs:
                return f"output {t} of input {p} is another input, {resolved_inputs[key]}; rename one of them"
            owner[key] = p
    return targets
