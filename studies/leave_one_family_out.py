"""Leave one SED family out: the project's standing answer to "what happens on galaxies we
did not simulate?" (docs/validation.md).

For each family F of a regeneration configuration, train the backbone at one fixed budget on
all families except F, then test on a nominal test set of F alone; and train once, at the
same budget, on all families, tested on each F. Everything else (network, data sizes,
instrument variations, seeds) is the configuration's. The point estimate is the CNN's
(Z_CNN): the budget goes to the backbone, which is what learns the galaxies. Beside each
row, the information bound on F's own spectra (a chi-square scan with the true SED).

    python studies/leave_one_family_out.py --config cpu --budget-s 600 --n-train 120000 \
        --n-test 2000 --n-oracle 150 --out docs/lofo

writes OUT/lofo.json and OUT/lofo.md (one row per family). Runs resume: each training is a
regeneration work directory under OUT/work/.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

log = logging.getLogger(__name__)


def train(config, families, out, args):
    from csst_sls_z.training.regenerate import Regeneration
    overrides = dict(families=families, backbone_budget_s=args.budget_s, logcosh_budget_s=0, n_train=args.n_train,
                     n_val=args.n_val, n_test=args.n_val, n_family_test=0, eval_every_s=max(5.0, args.budget_s / 6))
    if args.sps_library_n:
        overrides["sps_library_n"] = args.sps_library_n
    regen = Regeneration(config, out, progress=args.progress, overrides=overrides)
    regen.run(until="backbone")
    return regen


def cnn_on_family(regen, family, args, oracle=True):
    """Z_CNN on a nominal test set of ``family`` alone, fresh noise fixed by the seed; with the oracle."""
    from csst_sls_z.network.objectives import z_from_output
    from csst_sls_z.simulation import SimOptions
    from csst_sls_z.simulation.simulate import band_snr
    from csst_sls_z.training.baselines import oracle_redshifts, point_metrics
    from csst_sls_z.training.evaluate_generalisation import _simulate
    from csst_sls_z.training.data import BatchMaker
    from csst_sls_z.simulation.population import Population
    fam = regen.families(only=family)
    data, truth = _simulate(regen, args.n_test, args.seed, fam, SimOptions())
    maker = BatchMaker(data, seed=args.seed + 1, grid_rebin=regen.rc.grid_rebin)
    flux, err = maker.noisy(np.arange(len(data)))          # native pixels: the SNR and the bound read these
    ok = (err > 0) & np.isfinite(err) & np.isfinite(flux)
    x = maker.network_input(flux, err)[0]                  # on the network's grid (rebinned if coarse)
    backbone, cfg = regen.load_backbone()
    zc = np.concatenate([z_from_output(cfg, backbone(x[s:s + 512], training=False)["output"]).numpy()
                         for s in range(0, len(data), 512)])
    zt = data.z.astype(float)
    gi = data.band_slices[1]
    hi = band_snr(flux[:, gi], np.where(ok[:, gi], err[:, gi], 0.0)) > 3      # the SNR of the pixels scored
    rec = {"all": point_metrics(zc, zt), "snr_gt3": point_metrics(zc[hi], zt[hi])}
    if oracle and args.n_oracle:
        n = min(args.n_oracle, len(zt))
        sub = Population(**{k: getattr(truth, k)[:n] for k in truth.__dict__})
        z_or = oracle_redshifts(sub, flux[:n], err[:n], regen.instrument, fam, cfg.z_max, progress=False)
        rec["oracle"] = point_metrics(z_or, zt[:n])
        rec["cnn_on_oracle_subset"] = point_metrics(zc[:n], zt[:n])
    return rec


def table(results) -> str:
    def pct(x):
        return "-" if x is None or x != x else f"{100 * x:.1f}%"
    rows = ["| left-out family F | trained without F: eta / sigma_NMAD | all families: eta / sigma_NMAD | "
            "eta ratio (goal <= 1.5) | GI SNR > 3 eta: without F / all | bound on F: eta / sigma_NMAD |",
            "|---|---|---|---|---|---|"]
    for fam, r in results["families"].items():
        wo, al = r["without"], r["all"]
        ratio = wo["all"]["eta"] / al["all"]["eta"] if al["all"]["eta"] > 0 else float("nan")
        o = al.get("oracle")
        rows.append(f"| {fam} | {pct(wo['all']['eta'])} / {wo['all']['sigma_nmad']:.4f} | "
                    f"{pct(al['all']['eta'])} / {al['all']['sigma_nmad']:.4f} | {ratio:.2f} | "
                    f"{pct(wo['snr_gt3']['eta'])} / {pct(al['snr_gt3']['eta'])} | "
                    + (f"{pct(o['eta'])} / {o['sigma_nmad']:.4f} (n = {o['n']}) |" if o else "- |"))
    return "\n".join(rows)


def run(args) -> dict:
    from csst_sls_z.simulation.families import parse_families
    from csst_sls_z.training.regenerate import REGEN_CONFIGS
    weights = parse_families(args.families or REGEN_CONFIGS[args.config].families)
    if len(weights) < 2:
        raise SystemExit("leave-one-family-out needs at least two families")
    out = Path(args.out)
    work = out / "work"
    t0 = time.time()
    spec = lambda names: ",".join(f"{n}:{weights[n]}" if weights[n] else n for n in names)   # noqa: E731
    everyone = train(args.config, spec(weights), work / "ALL", args)
    results = {"config": args.config, "budget_s": args.budget_s, "n_train": args.n_train, "n_test": args.n_test,
               "families": {}}
    for fam in weights:
        without = train(args.config, spec([n for n in weights if n != fam]), work / f"without_{fam}", args)
        results["families"][fam] = {"without": cnn_on_family(without, fam, args, oracle=False),
                                    "all": cnn_on_family(everyone, fam, args)}
        log.info("%s: %s", fam, json.dumps(results["families"][fam]))
    results["wall_s"] = time.time() - t0
    out.mkdir(parents=True, exist_ok=True)
    (out / "lofo.json").write_text(json.dumps(results, indent=1, default=float))
    cmd = "python studies/leave_one_family_out.py " + " ".join(sys.argv[1:] if args.argv is None else args.argv)
    (out / "lofo.md").write_text(f"`{cmd}`\n\n{table(results)}\n")
    return results


def parser():
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="cpu", help="regeneration configuration (network, sizes, variations)")
    p.add_argument("--families", default=None, help="families and weights (default: the configuration's)")
    p.add_argument("--budget-s", type=float, default=600.0, help="backbone training budget per network, seconds")
    p.add_argument("--n-train", type=int, default=120000, help="training objects per network")
    p.add_argument("--n-val", type=int, default=2000, help="validation objects per network")
    p.add_argument("--n-test", type=int, default=2000, help="test objects of each left-out family")
    p.add_argument("--n-oracle", type=int, default=150, help="objects of each family scored by the bound (0: none)")
    p.add_argument("--sps-library-n", type=int, default=0, help="SPS library size (default: the configuration's)")
    p.add_argument("--seed", type=int, default=777, help="seed of the test sets")
    p.add_argument("--out", type=Path, default=Path("docs/lofo"))
    p.add_argument("--progress", action="store_true")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    results = run(args)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
