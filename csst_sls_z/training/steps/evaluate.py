"""Step ``evaluate``: metrics and figures on the test set (``training.evaluate``) into evaluation.json."""
from __future__ import annotations

import json


def run(regen):
    from ..evaluate import evaluate
    evaluation = evaluate(regen)
    (regen.out / "evaluation.json").write_text(json.dumps(evaluation, indent=1, default=float))
