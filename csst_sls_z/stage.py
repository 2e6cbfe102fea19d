"""The redshift stage: extracted GV/GI spectra in, SLS_REDSHIFT catalogs out.

A thin class in the style of CSST / JWST pipeline steps: its parameters, with their
types, defaults, bounds and help, sit in one place (``RedshiftStage.spec``, a :class:`Param`
each), it declares the reference types it needs, and ``run()`` returns a
:class:`StageResult` with a status. The commands (``run``, ``batch``, the scheduler hook)
generate their options and checks from ``spec`` and ``reference_types``
(``commands.add_stage_options``). The science lives in plain functions: ``products``
(I/O), ``preprocess`` (numba), ``network`` (TensorFlow, imported only here, only when
needed), ``calibration`` and ``quality`` (ZWARN).
"""
from __future__ import annotations

import datetime as _dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from . import datamodel as dm
from .datamodel import (KW_INPUT_NAME, KW_INPUT_SHA256, StageStatus, ZWarn,
                        empty_redshift_table)

log = logging.getLogger(__name__)

DEPENDENCIES = ("numpy", "numba", "tensorflow", "tensorflow_probability", "astropy", "fitsio", "scipy")


def input_cards(path, sha256: str | None = None) -> list[tuple[str, object, str]]:
    """The input product's identity, so an output can be traced to (and checked against) its input.

    ``sha256``: the digest of the file as opened (``ProductReader.sha256``), else the path is hashed."""
    from .reffiles.sets import sha256_file
    # FITS headers hold ASCII only: a non-ASCII file name is kept with backslash escapes.
    name = Path(path).name.encode("ascii", "backslashreplace").decode("ascii")
    return [(KW_INPUT_NAME, name[:68], "input product"),
            (KW_INPUT_SHA256, sha256 or sha256_file(path), "sha256 of the input product")]


@dataclass(frozen=True)
class Param:
    """One stage parameter: its name, type, default, bounds and help.

    ``type`` is ``int``, ``bool``, ``str``, ``Path`` or ``dict``; ``minimum``/``maximum`` bound an
    int, ``choices`` names the values a str may take.
    ``option``: offered by the commands as ``--name-with-dashes`` (``reference_overrides`` is
    offered as one ``--override-<reftype>`` per reference type instead). ``recorded``: written
    to the output header (``datamodel.param_keyword``) when not the default, so that outputs
    made with other values are told apart (batch resumes on it).
    """
    name: str
    type: type
    default: object
    help: str
    minimum: int | None = None
    maximum: int | None = None
    option: bool = True
    recorded: bool = False
    choices: tuple | None = None

    def check(self, value):
        """``value`` as this parameter holds it; a ValueError (one sentence) when it is out of bounds."""
        if value is None and self.default is None:
            return None
        if self.type is int:
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise ValueError(f"{self.name} must be an integer, not {value!r}") from None
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"{self.name} must be at least {self.minimum}")
            if self.maximum is not None and value > self.maximum:
                raise ValueError(f"{self.name} must be at most {self.maximum}")
            return value
        if self.type is bool:
            return bool(value)
        if self.type is str:
            value = str(value)
            if self.choices is not None and value not in self.choices:
                raise ValueError(f"{self.name} must be one of {', '.join(self.choices)}, not {value!r}")
            return value
        if self.type is Path:
            return Path(value)
        if self.type is dict:
            return dict(value) if value else None
        return value


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
    # Used where the set has it (sets before csst_sls_z_0007 lack the refinement: the network's Z).
    optional_reference_types = ("refinement",)
    # How, not what: neither changes a number (docs/performance.md, "Throughput").
    prefetch = False     # read the next chunk in a thread (measured slower: fitsio holds the GIL)
    warm_up = True       # run(): trace and compile the network in a thread while the first chunk is read
    # The one place a parameter, its type, default, bounds and help are declared; the
    # commands' options and checks are generated from it (commands.add_stage_options).
    spec = {p.name: p for p in (
        Param("samples", int, 200, "BNN samples per spectrum", minimum=1, recorded=True),
        Param("seed", int, 0, "seed of the BNN sampling noise", minimum=0, recorded=True),
        Param("per_object_noise", bool, False, "draw the BNN head's output noise per object (slower; the same "
              "distribution; reproduces catalogues made before the noise was shared by a batch)", recorded=True),
        Param("backbone_precision", str, "float32", "arithmetic of the backbone's convolutions: float32 "
              "(the default; the reference set's numbers) or bfloat16 (about 1.3x the spectra per second on "
              "CPUs with AVX512-BF16; it moves individual redshifts a little: docs/performance.md)", recorded=True,
              choices=dm.BACKBONE_PRECISIONS),
        Param("reference_dir", Path, None, "reference set (default: $CSST_SLS_Z_REFDIR, else the shipped set)"),
        Param("chunk_size", int, 4096, "objects per chunk in memory", minimum=1, recorded=True),
        Param("catalog_only", bool, False, "write only the primary header and SLS_REDSHIFT", recorded=True),
        Param("no_pz", bool, False, "leave the PZ column (p(z) per object) out of SLS_REDSHIFT; Z_ALT, P_ALT and "
              "MULTIPLE_PEAKS still come from p(z) (docs/pz.md)", recorded=True),
        Param("no_refine", bool, False, "skip the template refinement around the network's p(z) peaks: Z, ZERR, "
              "Z_LO and Z_HI are the network's (as sets without a refinement file give; docs/refinement.md)",
              recorded=True),
        Param("overwrite", bool, False, "replace existing outputs"),
        Param("ignore_checksum", bool, False, "process inputs whose FITS CHECKSUM/DATASUM fails (refused by "
              "default); the output then says INCHKSUM = 'FAILED'"),
        Param("reference_overrides", dict, None, "{reftype: path} replacing single reference files, each "
              "validated on its own (type, schema, checksums)", option=False),
    )}

    def __init__(self, **params):
        self.params = self.check_params(params)
        self._refs = None
        self._sampler = None
        self._pz = None

    def get_pars(self) -> dict:
        """This stage's checked parameters, every one of ``spec``: the one object that carries a run's
        parameters to another process (a batch worker) or another stage (``RedshiftStage(**pars)``),
        as stpipe's ``Step.get_pars``. Nobody lists parameters by hand."""
        return dict(self.params)

    @classmethod
    def check_params(cls, params: dict) -> dict:
        """Every parameter, ``params`` over the defaults, checked against ``spec``: a TypeError
        names unknown ones, a ValueError (one sentence) a value out of bounds."""
        unknown = set(params) - set(cls.spec)
        if unknown:
            raise TypeError(f"unknown stage parameters {sorted(unknown)}")
        return {name: p.check(params.get(name, p.default)) for name, p in cls.spec.items()}

    # ------------------------------------------------------------ reference files
    def load_references(self, announce: bool = True):
        """Validate (sha256, schema) and load every reference file, before any spectrum is read.

        ``announce``: log each file with its sha256 at INFO (False: at DEBUG, for batch workers,
        whose client has already said which set it runs).
        """
        if self._refs is None:
            from .reffiles.sets import load_reference_set
            from .reffiles.tables import load_calibration, load_thresholds, load_wavegrid
            refset = load_reference_set(self.params["reference_dir"], required=self.reference_types,
                                        overrides=self.params["reference_overrides"],
                                        optional=self.optional_reference_types)
            for reftype in self.reference_types + self.optional_reference_types:
                if reftype in refset.paths:
                    log.log(logging.INFO if announce else logging.DEBUG, "reference %-11s %s (sha256 %s)",
                            reftype, refset.path(reftype), refset.sha256[reftype][:16])
            self._refs = {"set": refset, "grid": load_wavegrid(refset.path("wavegrid")),
                          "calibration": load_calibration(refset.path("calibration")),
                          "thresholds": load_thresholds(refset.path("thresholds")), "refinement": None}
            if "refinement" in refset.paths and not self.params["no_refine"]:
                from .reffiles.refinement import load_refinement
                self._refs["refinement"] = load_refinement(refset.path("refinement"))
        return self._refs

    def sampler(self):
        if self._sampler is None:
            from .network.loader import load_sampler
            self._sampler, cfg = load_sampler(self.load_references()["set"], int(self.params["samples"]),
                                              int(self.params["seed"]),
                                              per_object_noise=bool(self.params["per_object_noise"]),
                                              precision=self.params["backbone_precision"])
            if cfg.input_length != self.load_references()["grid"].length:
                from .reffiles.header import ReferenceFileError
                raise ReferenceFileError(
                    f"backbone expects {cfg.input_length} input pixels, the wavegrid file has "
                    f"{self.load_references()['grid'].length}")
        return self._sampler

    def pz_maker(self):
        """How this reference set makes p(z) (``pz.PzMaker``): the network's bins, the softmax of a
        binned objective or the calibrated Gaussian of logcosh, and the calibration file's p(z) part."""
        if self._pz is None:
            from .network.objectives import objective_of
            from .pz import PzGrid, PzMaker
            cfg = self.sampler().cfg
            self._pz = PzMaker(PzGrid.from_config(cfg), objective_of(cfg).binned,
                               self.load_references()["calibration"])
        return self._pz

    def pz_bins(self):
        """Values per object of this run's PZ column; None when it is left out (``no_pz``)."""
        return None if self.params["no_pz"] else self.pz_maker().grid.nbin

    def output_cards(self):
        """The SLS_REDSHIFT cards that describe its content: the p(z) grid and how p(z) was made
        (``PZ_*``), and the name of every ZWARN bit (``ZWBITnn``)."""
        model = self.load_references()["refinement"]
        refined = [(dm.KW_REFINED, model is not None, "Z, ZERR, Z_LO, Z_HI: template refinement (T) or network (F)")]
        if model is not None:
            refined.append((dm.KW_REFINE_TEMPERATURE, float(model.temperature), "refined posterior's calibrated temperature"))
            if model.temperature_snr_edges:
                refined.append((dm.KW_REFINE_TSNR_N, len(model.temperature_snr_edges),
                                "refined temperature by SNR_GI: number of edges"))
                refined += [(dm.KW_REFINE_TSNR_EDGE.format(k), float(e), "SNR_GI edge of the temperature bins")
                            for k, e in enumerate(model.temperature_snr_edges, start=1)]
                refined += [(dm.KW_REFINE_TEMPERATURE_BIN.format(k), float(t), f"refined temperature, SNR_GI bin {k}")
                            for k, t in enumerate(model.temperatures_by_snr, start=1)]
        return self.pz_maker().cards(column=not self.params["no_pz"]) + refined + dm.zwarn_cards()

    # ------------------------------------------------------------ science on one chunk
    def measure_chunk(self, bands: dict, n: int, chunk_index: int) -> "ChunkMeasurement":
        """The catalogue rows of one chunk (ZWARN not yet set) and what the ZWARN rules read."""
        from .measure import measure_network
        from .preprocess import preprocess_bands
        from .pz import rows_float32
        from .quality import ZwarnInputs
        refs = self.load_references()
        n_pz = self.pz_bins()
        cat = empty_redshift_table(n, n_pz)
        pp = preprocess_bands(bands, refs["grid"], n)
        cat["SNR_GV"], cat["SNR_GI"] = pp.snr["GV"], pp.snr["GI"]
        cat["NPIX_GV"], cat["NPIX_GI"] = pp.npix["GV"], pp.npix["GI"]
        measurable = (pp.npix["GV"] > 0) | (pp.npix["GI"] > 0)
        ood = np.full(n, np.nan)
        if measurable.any():
            maker = self.pz_maker()
            pred = self.sampler().predict(pp.x[measurable], chunk_index=chunk_index, return_features=True,
                                          return_output=maker.binned)
            m = measure_network(mean=pred.mean, sigma=pred.sigma, z_cnn=pred.z_cnn, features=pred.features,
                                output=pred.output, pz_maker=maker, calibration=refs["calibration"],
                                thresholds=refs["thresholds"])
            for col in ("Z", "Z_LO", "Z_HI", "ZERR"):
                cat[col][measurable] = m.summary[col]
            cat["Z_CNN"][measurable] = m.z_cnn
            cat["ZERR_RAW"][measurable] = m.sigma_raw
            ood[measurable] = m.ood_distance
            # p(z) on the network's grid (pz.py): its second solution always, the column unless no_pz.
            cat["Z_ALT"][measurable], cat["P_ALT"][measurable] = m.z_alt, m.p_alt
            if n_pz is not None:
                cat["PZ"][measurable] = rows_float32(m.pz)
        # ZWARN's thresholds were chosen on the network's estimate: they judge it, refined or not.
        cat["Z_BNN"], cat["ZERR_BNN"] = cat["Z"], cat["ZERR"]
        network = {"z": cat["Z_BNN"].copy(), "z_lo": cat["Z_LO"].copy(), "z_hi": cat["Z_HI"].copy(),
                   "zerr": cat["ZERR_BNN"].copy()}
        refine_failed = None
        if refs["refinement"] is not None and measurable.any():
            refine_failed = self.refine_chunk(cat, bands, m.pz, measurable)
        inputs = ZwarnInputs(npix_gv=pp.npix["GV"], npix_gi=pp.npix["GI"], coverage=pp.coverage,
                             snr_gi=pp.snr["GI"], **network, ood_distance=ood, repaired=pp.repaired,
                             p_alt=cat["P_ALT"].astype(np.float64), refine_failed=refine_failed)
        return ChunkMeasurement(cat, inputs)

    def refine_chunk(self, cat, bands: dict, pz_measured, measurable) -> np.ndarray:
        """Z, ZERR, Z_LO and Z_HI of ``cat`` from the template refinement (``refine.py``) where it
        succeeds (``measure.refined_summary``); returns where it failed, where the network's stay."""
        from .measure import refined_summary
        from .refine import refine
        grid = self.pz_maker().grid
        pz = np.zeros((len(cat), grid.nbin))
        pz[measurable] = pz_measured
        network = {k: cat[k] for k in ("Z", "Z_LO", "Z_HI", "ZERR")}
        r = refine(bands, pz, grid, np.where(measurable, cat["Z"], np.nan), self.load_references()["refinement"],
                   snr_gi=cat["SNR_GI"])
        summary, failed = refined_summary(network, r)
        for key, values in summary.items():
            cat[key] = values
        return failed

    # ------------------------------------------------------------ one file
    def process_file(self, path: Path, out_path: Path) -> dict:
        from dataclasses import replace
        from .products import CatalogRows, open_product, write_redshift_product
        from .quality import zwarn_bits, zwarn_counts
        t0 = time.time()
        thresholds = self.load_references()["thresholds"]
        # The file is opened once: it is hashed, measured and copied into the output through
        # the same descriptor, so the output describes one file even if the path is replaced.
        with open_product(path, ignore_checksum=bool(self.params["ignore_checksum"])) as reader:
            identity = input_cards(path, reader.sha256()) + reader.header_cards()
            n = reader.n_objects
            if n == 0:
                return {"n_objects": 0}
            duplicate = np.isin(reader.objid, reader.duplicate_objids)
            # ``stage.prefetch = True`` reads the next chunk in a thread while this one is measured.
            # Off: measured slower (fitsio holds the GIL through its reads, which stalls
            # the thread driving TensorFlow; docs/performance.md, "Throughput").
            chunks = reader.iter_chunks(int(self.params["chunk_size"]), prefetch=self.prefetch)
            # The rows go to disk chunk by chunk (products.catalog_rows): memory holds one chunk of
            # the catalogue, whatever the file's size.
            with CatalogRows(n, self.pz_bins(), Path(out_path).parent, label=f"output {out_path}") as rows:
                for c, (sl, bands) in enumerate(chunks):
                    chunk = self.measure_chunk(bands, sl.stop - sl.start, c)
                    cat = chunk.catalog
                    cat["OBJID"] = reader.objid[sl]
                    cat["RA"], cat["DEC"] = reader.ra[sl], reader.dec[sl]
                    cat["ZWARN"] = zwarn_bits(replace(chunk.zwarn_inputs, duplicate_objid=duplicate[sl]), thresholds)
                    rows.append(cat)
                counts = zwarn_counts(rows.zwarn)
                status = StageStatus.PERFECT if counts["OK"] == n else StageStatus.WARNING
                cards = self.provenance_cards(status) + self.output_cards() + identity
                write_redshift_product(out_path, path, rows, cards,
                                       catalog_only=bool(self.params["catalog_only"]),
                                       overwrite=bool(self.params["overwrite"]), source=reader)
        log.info("%s: %d objects, %d usable, %.1f s -> %s", path, n, counts["OK"], time.time() - t0, out_path)
        return {"n_objects": n, "zwarn": counts, "status": status.value, "wall_s": time.time() - t0}

    def provenance_cards(self, status: StageStatus):
        """The cards every output of this stage carries (the input's own are ``input_cards``)."""
        import importlib.metadata as md
        refs = self.load_references()
        refset = refs["set"]
        key = dm.indexed_keyword
        cards = [(dm.KW_VERSION, __version__, "csst_sls_z version"),
                 (dm.KW_STAGE, self.name, "pipeline stage"),
                 (dm.KW_REFSET, refset.manifest_id[:68], "reference-set manifest id"),
                 (dm.KW_REFSET_PEDIGREE, refset.pedigree, "reference-set pedigree"),
                 (dm.KW_CALIBRATION_METHOD, refs["calibration"].method, "uncertainty calibration applied"),
                 (dm.KW_STATUS, status.value, "stage status for this file"),
                 (dm.KW_DATE_REDUCED, _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
                  "UTC of the run")]
        for i, reftype in enumerate(sorted(refset.paths)):
            cards.append((key(dm.KW_REF_TYPE, i), reftype, "reference type"))
            cards.append((key(dm.KW_REF_NAME, i), refset.paths[reftype].name[:68], "reference file"))
            cards.append((key(dm.KW_REF_SHA256, i), (refset.sha256.get(reftype) or "")[:64], ""))
        for i, dep in enumerate(DEPENDENCIES):
            try:
                version = md.version(dep.replace("_", "-"))
            except md.PackageNotFoundError:
                version = "absent"
            cards.append((key(dm.KW_DEP_NAME, i), dep, "dependency"))
            cards.append((key(dm.KW_DEP_VERSION, i), version, "its version"))
        for name, param in self.spec.items():
            value = self.params[name]
            if param.recorded and value != param.default:
                cards.append((dm.param_keyword(name), value if not isinstance(value, bool) else int(value),
                              f"parameter {name} (default {param.default})"))
        return cards

    # ------------------------------------------------------------ the run
    def run(self, inputs, output) -> StageResult:
        """Process ``inputs`` (paths); ``output`` is a file (one input) or a directory."""
        from .products import ProductError
        from .reffiles.header import ReferenceFileError
        inputs = [Path(p) for p in inputs]
        t0 = time.time()
        try:
            self.load_references()
            self.sampler()      # the network weights too (shapes): refused before any spectrum is read
            if self.warm_up:
                # The traces and the head's XLA compile overlap reading the first chunk.
                self.sampler().start_warm_up(self.load_references()["grid"].length, self.pz_maker().binned)
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


@dataclass
class ChunkMeasurement:
    """What :meth:`RedshiftStage.measure_chunk` returns for one chunk."""
    catalog: np.ndarray            # SLS_REDSHIFT rows; OBJID, RA, DEC and ZWARN are set by the caller
    zwarn_inputs: object           # quality.ZwarnInputs: what the ZWARN rules read about each object


def output_name(path) -> str:
    """Directory mode: ``<stem>_slsz.fits``, the stem being the whole file name less its FITS and
    compression suffixes (``sky.north.fits.gz`` -> ``sky.north_slsz.fits``), so distinct names stay distinct."""
    from .products.fitsutil import stem_of
    return f"{stem_of(Path(path))}_slsz.fits"


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
        if len(inputs) > 1 and output.suffix.lower() in (".fits", ".fit", ".fz") and not output.is_dir():
            return (f"{len(inputs)} inputs need an output directory (one <stem>_slsz.fits each), "
                    f"not the file name {output}")
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
