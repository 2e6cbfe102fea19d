"""A new reference set: an existing set's network, calibration and thresholds, plus a template refinement.

    python -m csst_sls_z.training.add_refinement --source reference_files/csst_sls_z_0006 \\
        --out reference_files/csst_sls_z_0007

Every file of the source set is copied unchanged (so ``--no-refine`` on the new set gives the
source set's catalogue, bit for bit), and a ``refinement`` file is added: the basis from the
source set's sedlib (REDROCK2016 + KCORRECT, orthonormalised; ``refine_basis``), its band
numbers from the instrument file, and the temperature of the refined posterior fitted on a
validation product simulated here like the regeneration's validation set (the training
population, the instrument variations on, the source set's SED families with an SPS library of
its own seed), measured through the stage's own path on its native pixels
(``RedshiftStage.measure_chunk``, then ``refine.refine``). A full regeneration does the same in
its ``refine`` step, on the network's grid (docs/refinement.md).

Exit 0 ok, 1 error (one sentence). The new set's manifest records this command and the fit.
"""
from __future__ import annotations

import json
import logging
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def fit_on_product(source_dir: Path, product: Path, model, z_true: np.ndarray, objid: np.ndarray):
    """(Refinement, the network's summary columns, z_true in catalogue order) of ``product``, as the
    stage measures it with the source set's network."""
    from ..products import open_product
    from ..refine import concatenate, refine
    from ..stage import RedshiftStage
    stage = RedshiftStage(reference_dir=source_dir, no_refine=True)
    grid = stage.pz_maker().grid
    parts, zs, ids = [], [], []
    with open_product(product) as reader:
        for c, (sl, bands) in enumerate(reader.iter_chunks(int(stage.params["chunk_size"]))):
            cat = stage.measure_chunk(bands, sl.stop - sl.start, c).catalog
            pz = np.nan_to_num(np.asarray(cat["PZ"], np.float64))
            parts.append(refine(bands, pz, grid, np.asarray(cat["Z"], np.float64), model))
            zs.append({k: np.asarray(cat[k], np.float64) for k in ("Z", "Z_LO", "Z_HI", "ZERR")})
            ids.append(reader.objid[sl])
    ids = np.concatenate(ids)
    order = {o: i for i, o in enumerate(objid)}
    zt = np.array([z_true[order[o]] for o in ids])
    network = {k: np.concatenate([z[k] for z in zs]) for k in zs[0]}
    return concatenate(parts), network, zt


def main(argv=None) -> int:
    from ..commands import Parser, add_log_level, positive_int, setup_logging
    argv = list(sys.argv[1:] if argv is None else argv)
    p = Parser(prog="python -m csst_sls_z.training.add_refinement",
               description="A new reference set: a set's files unchanged plus a template refinement file whose "
                           "posterior temperature is fitted on a simulated validation product (docs/refinement.md).")
    p.add_argument("--source", type=Path, required=True, help="the reference set to extend")
    p.add_argument("--out", type=Path, required=True, help="the new set's directory (must not exist)")
    p.add_argument("--n", type=positive_int, default=5000, help="validation objects the temperature is fitted on")
    p.add_argument("--seed", type=positive_int, default=31337, help="seed of the validation product")
    p.add_argument("--sps-library-n", type=positive_int, default=3000, help="entries of its SPS library")
    add_log_level(p)
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    from ..reffiles.header import ReferenceFileError
    try:
        return _build(args, shlex.join(["python", "-m", "csst_sls_z.training.add_refinement", *argv]))
    except (ReferenceFileError, OSError, ValueError) as exc:
        print(f"add_refinement: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1


def _build(args, command: str) -> int:
    from ..datamodel import EXIT_ERROR, EXIT_OK
    from ..measure import refined_summary
    from ..reffiles.refinement import write_refinement
    from ..reffiles.sets import load_reference_set, read_manifest, write_manifest
    from ..refine import STATUS_OK
    from ..simulation import TRAINING_VARIATIONS, load_models, simulate_products
    from ..simulation.families import FamilySet, parse_families
    from ..simulation.sps_library import build_sps_library, write_sps_library
    from .metrics import coverage
    from .refine_basis import build_refinement_model
    from .refine_calibration import fit_temperature
    if args.out.exists():
        print(f"add_refinement: error: {args.out} exists; sets are never edited in place, choose a new --out",
              file=sys.stderr)
        return EXIT_ERROR
    source = load_reference_set(args.source)
    manifest = read_manifest(args.source)
    if any(e["reftype"] == "refinement" for e in manifest["files"]):
        print(f"add_refinement: error: {args.source} already has a refinement file", file=sys.stderr)
        return EXIT_ERROR
    instrument, sedlib, _ = load_models(args.source)
    model = build_refinement_model(sedlib, instrument)
    families_spec = (manifest.get("provenance", {}).get("sed_families", {}) or {}).get("families",
                                                                                     "SPS:0.5,KCORRECT:0.3,REDROCK2016:0.2")
    with tempfile.TemporaryDirectory(prefix="add_refinement_") as tmp:
        tmp = Path(tmp)
        options = {}
        if "SPS" in parse_families(families_spec):
            lib = tmp / "sps_library.fits"
            write_sps_library(build_sps_library(args.sps_library_n, args.seed, progress=False), lib)
            options["sps_library"] = lib
        fams = FamilySet(sedlib, parse_families(families_spec), **options)
        (product,) = simulate_products(args.n, args.seed, "train", args.n, tmp, instrument, fams,
                                       TRAINING_VARIATIONS, progress=False)
        from astropy.io import fits
        with fits.open(product) as hdul:
            truth = hdul["TRUTH"].data
            z_true, objid = np.asarray(truth["Z_TRUE"], float), np.asarray(truth["OBJID"])
        r, network, zt = fit_on_product(args.source, product, model, z_true, objid)
    temperature = fit_temperature(r, zt)
    model = model.replace(temperature=temperature)
    from dataclasses import replace
    r.posterior = replace(r.posterior, temperature=temperature)
    summary, failed = refined_summary(network, r)
    record = {"n": int(zt.size), "temperature": temperature, "families": families_spec, "seed": args.seed,
              "refined": float(np.mean(r.status == STATUS_OK)), "refine_failed": float(np.mean(failed)),
              "cov68": coverage(zt, summary["Z_LO"], summary["Z_HI"]),
              "cov68_network": coverage(zt, network["Z_LO"], network["Z_HI"])}
    log.info("refinement temperature %.4g on %d validation objects: refined cov68 %.3f (network %.3f)",
             temperature, zt.size, record["cov68"], record["cov68_network"])
    args.out.mkdir(parents=True)
    files = {}
    for entry in manifest["files"]:
        shutil.copy2(args.source / entry["name"], args.out / entry["name"])
        files[entry["reftype"]] = entry["name"]
    write_refinement(args.out / "refinement.fits", model, source.pedigree, history=[
        f"Basis: sedlib {', '.join(model.libraries)} of {args.source.name}, orthonormalised.",
        f"Temperature {temperature:.4g}: refined 68% intervals cover 68% of {zt.size} simulated validation",
        f"objects (training population, variations on, {families_spec}, seed {args.seed}).",
        f"Made by: {command}"])
    files["refinement"] = "refinement.fits"
    provenance = {**manifest.get("provenance", {}), "command": command,
                  "extends": {"set": source.manifest_id, "original_command": manifest.get("provenance", {}).get("command")},
                  "refinement": record}
    write_manifest(args.out, files, source.pedigree, provenance=provenance)
    for extra in ("evaluation.json",):
        if (args.source / extra).exists():
            shutil.copy2(args.source / extra, args.out / extra)
    print(json.dumps(record))
    print(f"new reference set {args.out}; use it with --reference-dir {args.out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
