"""The regeneration's steps, one module each, in the order they run.

Each step is a function ``run(regen)`` of the driver (``training.regenerate.Regeneration``),
which owns the work directory, the seeds, the simulated sets and resumption: a step reads
what earlier steps left in ``regen.work`` and writes its own results there (``write``:
into the set itself).

    data       simulate the training, validation and test sets; record their hashes
    backbone   train the CNN on each objective with a budget (the network's own is shipped)
    head       freeze the backbone, train the MNF head on its features
    calibrate  fit the calibration on the validation set, choose the ZWARN thresholds
    refine     the template refinement's file: sedlib basis, posterior temperature fitted on validation
    evaluate   metrics and figures on the test set, and the generalisation block
    write      the manifest of the new set
"""
from __future__ import annotations

from . import backbone, calibrate, data, evaluate, head, refine, write

STEPS = {"data": data.run, "backbone": backbone.run, "head": head.run, "calibrate": calibrate.run,
         "refine": refine.run, "evaluate": evaluate.run, "write": write.run}
# Steps that run TensorFlow (its thread pools are set up before them).
TF_STEPS = ("backbone", "head", "calibrate", "refine", "evaluate")
