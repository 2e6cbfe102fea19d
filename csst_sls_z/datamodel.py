"""The file contract of csst_sls_z, in one place.

Every HDU name, column name, dtype, unit and ZWARN bit used anywhere in the package,
its tests or its docs comes from here (see docs/products.md). Formats change only by
adding: never rename a column or renumber a bit.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

# ---------------------------------------------------------------- input products
EXT_SPEC = {"GV": "SPEC_GV", "GI": "SPEC_GI", "GU": "SPEC_GU"}
BANDS_USED = ("GV", "GI")          # the network uses GV then GI; GU is read and ignored
EXT_TRUTH = "TRUTH"
KW_INPUT_NAME = "INFILE"           # output headers: the input product's file name
KW_INPUT_SHA256 = "INSHA256"       # output headers: the input product's sha256 (resume checks it)
KW_UNITS_ASSUMED = "UNITDFLT"      # output headers: T if a WAVELENGTH/FLUX/ERR column had no TUNIT (units assumed)
KW_INPUT_CHECKSUM = "INCHKSUM"     # output headers: the input's CHECKSUM/DATASUM, one of INPUT_CHECKSUM_STATES
INPUT_CHECKSUM_STATES = ("VALID", "ABSENT", "FAILED")   # FAILED: processed anyway (--ignore-checksum)
KW_MAGBAND = "MAGBAND"             # TRUTH header: the band MAG_NORM is measured through
MAG_NORM_BAND = "GI"               # the simulator normalises through the GI grating throughput
EXT_REDSHIFT = "SLS_REDSHIFT"

FLUX_UNIT = "1e-17 erg/s/cm2/Angstrom"
WAVE_UNIT = "Angstrom"

COL_OBJID = "OBJID"
COL_RA = "RA"
COL_DEC = "DEC"
COL_WAVE = "WAVELENGTH"
COL_FLUX = "FLUX"
COL_ERR = "ERR"
SPEC_VECTOR_COLUMNS = (COL_WAVE, COL_FLUX, COL_ERR)
SPEC_REQUIRED_COLUMNS = (COL_OBJID,) + SPEC_VECTOR_COLUMNS

# Layout B: one object per HDU, one row per pixel; the band is a header keyword.
KEY_BAND = "BAND"
KEY_OBJID = "OBJID"

# Primary-header keywords of a product.
PRIMARY_KEYS = {"TELESCOP": "CSST", "INSTRUME": "MSC"}


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str          # numpy dtype string, big-endian as FITS stores it is handled by the writer
    fits_format: str    # TFORM
    unit: str
    doc: str
    comment: str = ""   # the header comment where ``doc`` would not fit a card whole (TTYPE: 47 characters)
    vector: bool = False  # one value per p(z) grid bin: its length is the PZ_NBIN keyword (``redshift_columns``)

    @property
    def header_comment(self) -> str:
        return self.comment or self.doc


TTYPE_COMMENT_MAX = 47     # 80 - len("TTYPEnn = '        '           / ")


# ---------------------------------------------------------------- output catalogue
REDSHIFT_COLUMNS = (
    Column("OBJID", "i8", "K", "", "source identifier, from the input"),
    Column("RA", "f8", "D", "deg", "from the input where present, else NaN"),
    Column("DEC", "f8", "D", "deg", "from the input where present, else NaN"),
    Column("Z", "f8", "D", "", "calibrated point estimate: median of the calibrated distribution",
           comment="calibrated point estimate: median of p(z)"),
    Column("ZERR", "f4", "E", "", "calibrated 1-sigma: half the width of the central 68% interval",
           comment="calibrated 1-sigma: half the central 68% width"),
    Column("Z_LO", "f4", "E", "", "calibrated central 68% interval, lower end"),
    Column("Z_HI", "f4", "E", "", "calibrated central 68% interval, upper end"),
    Column("Z_CNN", "f4", "E", "", "point estimate of the deterministic CNN"),
    Column("ZERR_RAW", "f4", "E", "", "uncalibrated BNN sigma, sqrt(aleatoric + epistemic)",
           comment="uncalibrated sigma: sqrt(aleatoric+epistemic)"),
    Column("SNR_GV", "f4", "E", "", "mean over valid pixels of max(FLUX, 0) / ERR"),
    Column("SNR_GI", "f4", "E", "", "mean over valid pixels of max(FLUX, 0) / ERR"),
    Column("NPIX_GV", "i4", "J", "", "valid pixels used"),
    Column("NPIX_GI", "i4", "J", "", "valid pixels used"),
    Column("ZWARN", "i4", "J", "", "bitmask, 0 = usable"),
    # Added with the p(z) (docs/pz.md): the second solution of p(z), written whether or
    # not the PZ column is (``--no-pz``). NaN / 0 where p(z) has no second peak.
    Column("Z_ALT", "f4", "E", "", "second-highest mode of p(z); NaN if p(z) has one peak",
           comment="second-highest mode of p(z), NaN if none"),
    Column("P_ALT", "f4", "E", "", "probability in the peak of Z_ALT; 0 if p(z) has one peak, NaN if Z is NaN",
           comment="probability in the peak of Z_ALT (0 if none)"),
    # Added with the template refinement (docs/refinement.md): Z, ZERR, Z_LO and Z_HI are the
    # refined ones where it ran; the network's calibrated estimate stays here.
    Column("Z_BNN", "f8", "D", "", "the network's calibrated point estimate (Z before the refinement)",
           comment="network's calibrated Z (before refinement)"),
    Column("ZERR_BNN", "f4", "E", "", "the network's calibrated 1-sigma (ZERR before the refinement)",
           comment="network's calibrated ZERR (before refinement)"),
)
# Columns written unless a stage parameter leaves them out. PZ is a vector of PZ_NBIN values per
# object on the grid the PZ_* keywords describe (``pz.PzGrid``); ``--no-pz`` leaves it out. It
# always comes after REDSHIFT_COLUMNS, so they keep their positions either way.
PZ_COLUMN = Column("PZ", "f4", "E", "", "p(z): probability in each bin of the PZ_* grid, each row sums to 1; "
                   "NaN where Z is NaN", comment="probability per bin of the PZ_* grid, sums to 1",
                   vector=True)
OPTIONAL_REDSHIFT_COLUMNS = (PZ_COLUMN,)


def redshift_columns(n_pz: int | None = None) -> tuple:
    """The SLS_REDSHIFT columns of an output, in order: ``REDSHIFT_COLUMNS``, then PZ with ``n_pz``
    values per object (its TFORM ``<n_pz>E``) when ``n_pz`` is given, else no PZ column."""
    if n_pz is None:
        return REDSHIFT_COLUMNS
    if int(n_pz) < 1:
        raise ValueError(f"a PZ column needs at least one bin, not {n_pz}")
    from dataclasses import replace
    return REDSHIFT_COLUMNS + (replace(PZ_COLUMN, fits_format=f"{int(n_pz)}{PZ_COLUMN.fits_format}"),)


def redshift_dtype(n_pz: int | None = None) -> np.dtype:
    """The numpy dtype of an SLS_REDSHIFT table (with a PZ column of ``n_pz`` values, if given)."""
    return np.dtype([(c.name, c.dtype, (int(n_pz),)) if c.vector else (c.name, c.dtype)
                     for c in redshift_columns(n_pz)])


REDSHIFT_DTYPE = redshift_dtype()      # without the optional columns


class ZWarn(enum.IntFlag):
    """ZWARN bits, one per condition; each bit's meaning is in ``ZWARN_MEANINGS`` (docs/products.md
    has the full text) and the logic that sets it in ``quality.py``. A meaning never changes once
    released; bits 16-23 are reserved downstream (``ZWarn.reserved_downstream()``)."""
    NODATA = 1 << 0
    MISSING_BAND = 1 << 1
    LITTLE_COVERAGE = 1 << 2
    LOW_SNR = 1 << 3
    Z_FITLIMIT = 1 << 4
    LARGE_ZERR = 1 << 5
    BAD_INPUT = 1 << 6
    OUT_OF_DISTRIBUTION = 1 << 7
    MULTIPLE_PEAKS = 1 << 8            # added with the p(z)
    REFINE_FAILED = 1 << 9             # added with the template refinement

    @property
    def bit(self) -> int:
        """The bit number (0 for NODATA)."""
        return int(self).bit_length() - 1

    @property
    def meaning(self) -> str:
        return ZWARN_MEANINGS[self.name]

    @classmethod
    def reserved_downstream(cls) -> range:
        """Bit numbers this package never sets: left to downstream stages."""
        return range(16, 24)

    @classmethod
    def decode(cls, value: int) -> list:
        """(bit, name, meaning) of every bit set in ``value``, defined or not (``BIT<n>`` for
        undefined bits, with "reserved for downstream use" or "not defined" as the meaning)."""
        flags = {flag.bit: flag for flag in cls}
        out = []
        for bit in range(int(value).bit_length()):
            if not (int(value) >> bit) & 1:
                continue
            if bit in flags:
                out.append((bit, flags[bit].name, flags[bit].meaning))
            else:
                what = "reserved for downstream use" if bit in cls.reserved_downstream() else "not defined"
                out.append((bit, f"BIT{bit}", what))
        return out


ZWARN_MEANINGS = {   # one line per bit, for people (csst-sls-z inspect); docs/products.md has the full text
    "NODATA": "no valid pixel in GV or GI; Z is NaN",
    "MISSING_BAND": "one of GV, GI absent or without a valid pixel",
    "LITTLE_COVERAGE": "under half of the network grid has valid data",
    "LOW_SNR": "SNR_GI below the stored threshold",
    "Z_FITLIMIT": "interval touches the edge of the trained redshift range",
    "LARGE_ZERR": "ZERR / (1 + Z) above the stored threshold",
    "BAD_INPUT": "input had to be repaired",
    "OUT_OF_DISTRIBUTION": "input unlike the training set (stored statistic)",
    "MULTIPLE_PEAKS": "P_ALT above the stored threshold: a second solution",
    "REFINE_FAILED": "template refinement could not run or its minimum is on a window edge; Z is the network's",
}
KW_ZWARN_BIT = "ZWBIT"             # + 2-digit bit number: the name of that ZWARN bit (output headers)


def zwarn_cards() -> list[tuple[str, object, str]]:
    """One card per ZWARN bit this package sets, ``ZWBITnn = NAME / meaning``: the output says
    what its ZWARN values mean without the documentation (40 = LARGE_ZERR + LOW_SNR)."""
    return [(indexed_keyword(KW_ZWARN_BIT, flag.bit), flag.name, ZWARN_MEANINGS[flag.name]) for flag in ZWarn]

# ---------------------------------------------------------------- the thresholds file's numbers
# Every number a ZWARN rule compares against (``quality.py``), as the thresholds reference file
# stores it: the attribute of ``reffiles.tables.Thresholds``, its header keyword and comment, and
# what a file of schema version 1 written before the number existed implies (``REQUIRED``: every
# such file holds it). A new bit with a trained threshold adds its line here. LITCOVER was fixed
# at 0.5 before it was stored; MPEAKPAL None disables MULTIPLE_PEAKS, so a set chosen before the
# bit existed never sets it and its catalogues keep their ZWARN (tests/test_golden.py).
REQUIRED = object()


@dataclass(frozen=True)
class ThresholdKeyword:
    name: str
    keyword: str
    comment: str
    schema1_default: object = REQUIRED


THRESHOLD_KEYWORDS = (
    ThresholdKeyword("low_snr", "LOWSNR", "LOW_SNR: SNR_GI below this"),
    ThresholdKeyword("large_zerr", "LARGEZER", "LARGE_ZERR: ZERR/(1+Z) above this"),
    ThresholdKeyword("ood_max", "OODMAX", "OUT_OF_DISTRIBUTION: feature distance above this"),
    ThresholdKeyword("z_min", "ZMIN", "trained redshift range, lower end"),
    ThresholdKeyword("z_max", "ZMAX", "trained redshift range, upper end"),
    ThresholdKeyword("min_coverage", "LITCOVER", "LITTLE_COVERAGE: valid grid fraction below this", 0.5),
    ThresholdKeyword("multiple_peaks", "MPEAKPAL", "MULTIPLE_PEAKS: P_ALT above this", None),
)

# ---------------------------------------------------------------- p(z) keywords (docs/pz.md)
# SLS_REDSHIFT header keywords that describe p(z): the grid of the PZ column (and of Z_ALT/P_ALT,
# which are written with or without it) and how p(z) was made. Bin i (0-based) of PZ is centred on
# x_i = PZ_Z0 + i * PZ_DZ in the variable PZ_SPACE ('z', or 'ln1pz' for x = ln(1 + z)) and spans
# x_i +- PZ_DZ / 2; PZ[i] is the probability in that bin (not a density).
KW_PZ_SPACE = "PZ_SPACE"           # 'z' or 'ln1pz'
KW_PZ_Z0 = "PZ_Z0"                 # centre of the first bin, in PZ_SPACE
KW_PZ_DZ = "PZ_DZ"                 # bin width, in PZ_SPACE
KW_PZ_NBIN = "PZ_NBIN"             # number of bins (the PZ column's length)
KW_PZ_KIND = "PZ_KIND"             # one of PZ_KINDS: what p(z) is made from
KW_PZ_CALIBRATED = "PZ_CALIB"      # T: calibrated on the validation set; F: raw network output
KW_PZ_METHOD = "PZ_METH"           # the calibration applied to p(z): 'temperature', 'beta', 'scale' or 'none'
KW_PZ_TEMPERATURE = "PZ_TEMP"      # the temperature, when PZ_METH = 'temperature'
KW_PZ_COLUMN = "PZ_COL"            # T: the PZ column is written; F: left out (--no-pz)
KW_REFINED = "REFINED"             # T: Z, ZERR, Z_LO, Z_HI are the template refinement's; F: the network's
KW_REFINE_TEMPERATURE = "REFTEMP"  # the refined posterior's calibrated temperature, when REFINED
# ... and where the refinement file has temperatures by GI SNR: the number of edges, then each edge
# (RTSNRE01, ...) and each bin's temperature (RTEMPB01, ..., one more than edges); an object takes
# the temperature of its SNR_GI's bin (REFTEMP where SNR_GI is not finite).
KW_REFINE_TSNR_N = "RTSNRN"
KW_REFINE_TSNR_EDGE = "RTSNRE{:02d}"
KW_REFINE_TEMPERATURE_BIN = "RTEMPB{:02d}"
PZ_SPACES = ("z", "ln1pz")
# Arithmetic of the backbone at inference (stage parameter backbone_precision, P_BACKBO when not
# the first): float32 gives the reference set's numbers, bfloat16 changes them (network.backbone).
BACKBONE_PRECISIONS = ("float32", "bfloat16")
PZ_KINDS = ("SOFTMAX", "GAUSSIAN")   # the backbone's softmax (zbins), or the BNN's Gaussian (logcosh)

# ---------------------------------------------------------------- output provenance
# Keywords of the SLS_REDSHIFT header that say how it was made (stage.provenance_cards writes
# them; batch resumes on them). The input's identity is KW_INPUT_NAME / KW_INPUT_SHA256 above.
KW_VERSION = "SLSZVER"             # csst_sls_z version
KW_STAGE = "STAGE"                 # pipeline stage name
KW_REFSET = "REFSET"               # reference-set manifest id
KW_REFSET_PEDIGREE = "REFPEDIG"    # reference-set pedigree
KW_CALIBRATION_METHOD = "CALMETH"  # uncertainty calibration applied
KW_STATUS = "STATUS"               # stage status for this file (StageStatus)
KW_DATE_REDUCED = "DATE-RED"       # UTC of the run
KW_REF_TYPE = "REFTYP"             # + 2-digit index: a reference type used
KW_REF_NAME = "REFNAM"             # + 2-digit index: its file name
KW_REF_SHA256 = "REFSHA"           # + 2-digit index: its sha256
KW_DEP_NAME = "DEPNAM"             # + 2-digit index: a dependency
KW_DEP_VERSION = "DEPVER"          # + 2-digit index: its version
KW_PARAM = "P_"                    # + parameter name: a stage parameter that is not its default


# The header keyword of each recorded stage parameter (``Param.recorded``), written when its value
# is not the default. Named here, one by one, so two parameters can never share a card (a name cut
# to 8 characters would: ``samples`` and ``samples_per_block``); checked below at import.
PARAM_KEYWORDS = {
    "samples": "P_SAMPLE",
    "seed": "P_SEED",
    "per_object_noise": "P_PER_OB",
    "backbone_precision": "P_BACKBO",
    "chunk_size": "P_CHUNK_",
    "catalog_only": "P_CATALO",
    "no_pz": "P_NO_PZ",
    "no_refine": "P_NOREF",
}
if (len(set(PARAM_KEYWORDS.values())) != len(PARAM_KEYWORDS)
        or not all(k.startswith(KW_PARAM) and len(k) <= 8 for k in PARAM_KEYWORDS.values())):
    raise ImportError("datamodel.PARAM_KEYWORDS: every keyword must be unique, start with P_ and fit 8 characters")


def param_keyword(name: str) -> str:
    """The header keyword of a recorded stage parameter that is not its default (``PARAM_KEYWORDS``)."""
    try:
        return PARAM_KEYWORDS[name]
    except KeyError:
        raise KeyError(f"stage parameter {name!r} is recorded but has no keyword in datamodel.PARAM_KEYWORDS") from None


def indexed_keyword(prefix: str, index: int) -> str:
    """``REFTYP00``, ``DEPVER03``, ...: a prefix above and a 2-digit index."""
    return f"{prefix}{index:02d}"


# What an existing output must share with a run (by keyword prefix) to count as its result on resume.
PROVENANCE_MATCH_PREFIXES = (KW_VERSION, KW_REFSET, KW_REF_TYPE, KW_REF_NAME, KW_REF_SHA256, KW_PARAM,
                             KW_INPUT_SHA256)

# ---------------------------------------------------------------- simulator truth
TRUTH_COLUMNS = (
    Column("OBJID", "i8", "K", "", "source identifier"),
    Column("Z_TRUE", "f8", "D", "", "true redshift"),
    Column("MAG_NORM", "f4", "E", "mag", "AB magnitude through the normalising band (MAGBAND keyword)"),
    Column("R_EFF", "f4", "E", "arcsec", "Sersic effective (half-light) radius, major axis"),
    Column("SERSIC_N", "f4", "E", "", "Sersic index"),
    Column("AXIS_RATIO", "f4", "E", "", "minor / major axis ratio b/a"),
    Column("PA", "f4", "E", "deg", "major axis position angle from the dispersion direction"),
    Column("SED_LIB", "U12", "12A", "", "SED library of the object"),
    Column("SED_INDEX", "i4", "J", "", "index of the archetype / galaxy in the library, -1 if none"),
    Column("SED_COEFF", "f4", "5E", "", "coefficients on the library's 5 basis spectra"),
    Column("WAVE_SHIFT_GV", "f4", "E", "pixel", "wavelength-calibration shift applied in GV"),
    Column("WAVE_SHIFT_GI", "f4", "E", "pixel", "wavelength-calibration shift applied in GI"),
    Column("SNR_GV", "f4", "E", "", "mean over valid pixels of max(FLUX, 0) / ERR"),
    Column("SNR_GI", "f4", "E", "", "mean over valid pixels of max(FLUX, 0) / ERR"),
    # Added with the SED families and instrument variations (docs/simulation.md). Any family
    # fills SED_PARAM; the header keywords FAMNAMnn / FAMPARnn name each family's parameters.
    Column("SED_PARAM", "f4", "8E", "", "physical parameters of the SED, named per family in the header"),
    Column("RESOLUTION", "f4", "E", "", "resolving power R = lambda / FWHM of the LSF"),
    Column("PSF_ADDED", "i2", "I", "", "1: the PSF was added to the LSF in quadrature; 0: inside R"),
    Column("DISP_SCALE", "f4", "E", "", "true / nominal dispersion (Angstrom per pixel)"),
    Column("ERR_SCALE", "f4", "E", "", "reported ERR / true noise sigma"),
    Column("FLUX_TILT", "f4", "E", "", "flux-calibration tilt: fractional error at 10500 A"),
    Column("SKY_SCALE", "f4", "E", "", "sky level / nominal sky"),
    Column("MORPH_KERNEL", "i2", "I", "", "self-broadening kernel: 0 Sersic projection, 1 Gaussian"),
)
N_SED_COEFF = 5
N_SED_PARAM = 8
KW_FAMILY_NAME = "FAMNAM"          # TRUTH header: + 2-digit index, an SED family's name
KW_FAMILY_PARAMS = "FAMPAR"        # TRUTH header: + 2-digit index, its SED_PARAM names, comma-separated
KW_FAMILY_DATA = "FAMDAT"          # TRUTH header: + 2-digit index, the family's built data (sha256 prefix, seed, n)

# ---------------------------------------------------------------- reference files
REFTYPES = ("instrument", "sedlib", "wavegrid", "backbone", "bnnhead", "calibration", "thresholds", "refinement")
# Types a set may lack: sets made before the type existed (up to csst_sls_z_0006 for the
# refinement); the stage then runs without what it adds and says so in the output header.
OPTIONAL_REFTYPES = ("refinement",)
REQUIRED_REFTYPES = tuple(t for t in REFTYPES if t not in OPTIONAL_REFTYPES)
PEDIGREES = ("SIMULATION", "DUMMY")
MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1
REFFILE_SCHEMA_VERSION = 1
ENV_REFERENCE_DIR = "CSST_SLS_Z_REFDIR"
ENV_REFERENCE_OVERRIDE_PREFIX = "CSST_SLS_Z_REF_"   # + REFTYPE.upper(): a path to one file

# Header keywords every reference file carries.
REF_HEADER_KEYS = ("REFTYPE", "PEDIGREE", "AUTHOR", "SCHEMAV", "DESCRIP", "USEAFTER")

# ---------------------------------------------------------------- stage status
class StageStatus(enum.Enum):
    PERFECT = "PERFECT"
    WARNING = "WARNING"
    ERROR = "ERROR"
    NO_DATA = "NO_DATA"


# Exit codes of every command.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOTHING_TO_DO = 3    # "no spectra in input" / nothing to process


def empty_redshift_table(n: int, n_pz: int | None = None) -> np.ndarray:
    """An SLS_REDSHIFT table of n rows with every measurement unset (NaN; 0 for integers),
    with a PZ column of ``n_pz`` values per row when ``n_pz`` is given."""
    table = np.zeros(n, dtype=redshift_dtype(n_pz))
    for col in redshift_columns(n_pz):
        if col.dtype.startswith("f"):
            table[col.name] = np.nan
    return table
