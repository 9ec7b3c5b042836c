"""The paper's evaluation tables for one or more model artifacts, side by side.

One module per concern, in the order an evaluation runs them::

    config       EvaluateJobConfig (jobs/evaluate.py), EvalConfig (Table 4's draws, batch size)
    predictions  an artifact over a labelled split (Ray Data decode), the split the tables use, every engine
    metrics      accuracy, loss, per-class, confusion, Table 4's seeded draws, calibration
    ferplus      the same faces against FER+ labels
    writing      evaluation.json, evaluation.md, plots
    driver       evaluate_all: all of the above for a list of artifacts

Nothing is imported here, so ``fer_ray.evaluate.config`` loads without torch (``--help`` stays quick).
"""
