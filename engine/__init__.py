"""The engine: training (trainer, saver, schedulers, distributed), prediction and ensembling (predict, inference,
prediction), weight averaging (swa), scoring and the post-processing search (scoring), reports (report/), the
ensemble runner (ensemble: folds as submitit jobs, jobs; their progress, watch), pseudo-labels (pseudo), the
run-folder layout (layout) and the typed configuration (config).

It imports ``tgs``, ``datasets``, ``models`` and ``losses``; nothing below it imports the engine, and it never sees
an ``argparse.Namespace``: the ``cli`` modules convert their options into the typed objects defined here.
"""
