"""Step ``backbone``: train the CNN on each objective that has a budget.

The network configuration's own objective (``zbins`` for every shipped network) trains for
``backbone_budget_s`` and is the one written to work/backbone.fits; ``COMPARISON`` trains
for ``logcosh_budget_s`` (0: not at all) so the two validation curves can be compared at
equal wall time. The objectives themselves are entries of ``network.objectives.OBJECTIVES``.
"""
from __future__ import annotations

from dataclasses import replace

from .data import fixed

COMPARISON = "logcosh"        # the comparison objective (the paper's), budget rc.logcosh_budget_s


def budgets(regen) -> dict:
    """Objective -> training budget in seconds, the shipped objective first."""
    out = {regen.cfg.objective: regen.rc.backbone_budget_s}
    out.setdefault(COMPARISON, regen.rc.logcosh_budget_s)
    return out


def run(regen):
    from ...network.weights import save_weights
    from ..train_backbone import train_backbone
    x_val, z_val = fixed(regen, "val")
    shipped = regen.cfg.objective
    results = {}
    for objective, budget in budgets(regen).items():
        if budget <= 0:
            continue
        cfg = replace(regen.cfg, objective=objective)
        maker = regen.batch_maker("train", regen.seeds["batches"])
        model, history = train_backbone(cfg, maker.stream(regen.rc.batch_size), x_val, z_val, budget,
                                        regen.work / f"backbone_{objective}", batch_size=regen.rc.batch_size,
                                        eval_every_s=regen.rc.eval_every_s, progress=regen.progress)
        results[objective] = history
        if objective == shipped:
            save_weights(model, regen.work / "backbone.fits", "backbone", cfg, "SIMULATION",
                         "CNN backbone, trained on simulated CSST spectra", overwrite=True,
                         history=[f"regenerate --config {regen.name}: {len(history)} evaluations, "
                                  f"budget {budget:.0f} s, objective {objective}"])
    regen.save_json("backbone_histories.json", results)
