"""The ensemble runner behind ensemble.py: the 9th place's 20-model ensemble in one call.

For every input mode (``pad``: reflect-pad 101 -> 128; ``resize``: 101 -> 128; any mode of tgs.inputs.INPUT_MODES, each
at its size) and every fold, one job
of submitit (:mod:`engine.jobs`: on this machine, on a Slurm cluster, or in this process), several at a time where
the places allow (:func:`.places.places`: one per GPU, N shares of the CPU cores, or the cluster's queue):

1. train into RUN/MODE/FOLD; a fold with a last checkpoint but no SWA model resumes (``torchrun`` when a Slurm
   fold has several GPUs);
2. swa into RUN/MODE/FOLD_swa.pth; a fold whose SWA model exists is finished and skipped next time,

each fold's job being typed data (its training configuration and SWA options, :mod:`engine.fold_job`) written into
its job folder, never a command line of the scripts,

while :mod:`engine.watch` echoes the folds' logs and shows how far they are and the time left; then, in this
process, with all the SWA models (:mod:`.outputs`, calling the engine directly): out-of-fold predictions of each
fold, merged and scored; the post-processing search on them (RUN/postprocess.json); the test predictions with
flip TTA over every SWA model and that post-processing; the submission's check. The file names are
:class:`EnsembleLayout`'s.

Reuse (:mod:`.reuse`): an output is reused only when its record of the digests of every input that made it equals
what is asked now. A fold is reused (skipped or resumed) only when it was made from the same data, folds file,
pseudo-labels and training options; otherwise the run stops with one line saying what differs, unless
``overwrite`` (then that fold's files are removed and it is trained afresh). Every fold is checked before any job
is submitted.

Self-training (``pseudo_rounds`` K > 0, the 1st place's rounds): after round r has predicted the test set,
pseudo-labels are chosen from its test predictions (:mod:`.rounds`, :mod:`engine.pseudo`), and round r+1
trains every fold again with them, in RUN/round{r+1}/, then swa, out-of-fold, search and submission as before.
Every round's folder, out-of-fold score and submission are kept and the summary prints the score per round; a
rerun resumes inside the round where it stopped. ``pseudo_source='fold'`` keeps each fold's out-of-fold score
honest (its labels come from its own models only); ``'ensemble'`` says plainly that the score is optimistic.

One module per job: :mod:`.options` (what is asked), :mod:`.naming` (the folds as jobs, each one's
configuration), :mod:`.reuse` (records of inputs), :mod:`.places` (GPU and CPU placement), :mod:`.training` (the
fold jobs), :mod:`.steps` (the in-process steps), :mod:`.outputs`, :mod:`.mosaics`, :mod:`.rounds`,
:mod:`.summary`, :mod:`.pipeline` (the run).
"""
from __future__ import annotations

from engine.ensemble.naming import Job, fold_config, jobs_of, labels_of  # noqa: F401
from engine.ensemble.options import MODES, EnsembleOptions  # noqa: F401
from engine.ensemble.pipeline import run  # noqa: F401
from engine.ensemble.places import places, visible_gpus  # noqa: F401
from engine.ensemble.training import fold_job, fold_spec, run_folds, tasks_of  # noqa: F401
from engine.jobs import ROOT  # noqa: F401  (the project's root, where ensemble.py is)
