"""What an ensemble run is asked to do, as typed values (:class:`EnsembleOptions`): cli/ensemble.py makes it from
ensemble.py's flags and the pass-through options of training, SWA and prediction, each already parsed and checked
by the options' own declarations (engine.config for training)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine import swa
from engine.config import RUN_ONLY, TrainConfig  # noqa: F401  (RUN_ONLY: options that never change a fold's result)
from engine.jobs import EXECUTORS, SlurmSettings
from engine.layout import EnsembleLayout
from tgs.pseudo import Rule

MODES = ("pad", "resize")  # the 9th place's two input modes, the default; any of tgs.inputs.INPUT_MODES may be asked
SWA_RUN_ONLY = swa.RUN_ONLY  # SWA options that never change the averaged model's result, from their declarations
POLL_S = {e.name: e.poll_s for e in EXECUTORS.entries()}  # how often running jobs and their files are looked at


@dataclass(frozen=True)
class EnsembleOptions:
    data_dir: str
    run_dir: str
    folds: tuple
    train: TrainConfig = field(default_factory=TrainConfig)  # every fold's options; each job sets its own fold's
    modes: tuple = MODES
    folds_file: str | None = None
    sizes: tuple = ()  # ((mode, model input size), ...) given; other modes take their registered default size
    swa: dict = field(default_factory=dict)  # engine.swa.SwaOptions fields given (--swa-args)
    predict: dict = field(default_factory=dict)  # engine.prediction.PredictOptions fields given (--test-args)
    post_config: str | None = None  # a post-processing setting file given (--test-args): replaces the searched one
    post: dict = field(default_factory=dict)  # tgs.postprocess.PostProcess fields given (--test-args)
    shared: dict = field(default_factory=dict)  # training options SWA and prediction take too (device, threads, amp)
    tta: bool = True
    tuned_post: bool = True
    gpus: str = "auto"
    parallel: int = 0
    overwrite: bool = False
    dry_run: bool = False
    executor: str = "local"  # local, slurm, debug (engine.jobs)
    max_retries: int = 2
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    # self-training: rounds after round 0, where the next round's pseudo-labels come from, how they are chosen,
    # the training options of the rounds that use them, and (set per round) the labels each fold trains on
    pseudo_rounds: int = 0
    pseudo_source: str = "fold"
    pseudo_rule: Rule = field(default_factory=Rule)
    pseudo_train: dict = field(default_factory=dict)  # e.g. {"pseudo_fraction": 0.5}
    pseudo_labels: str | tuple | None = None  # one file for every fold, or ((fold, file), ...)
    # the jigsaw: build the mosaics once (RUN/mosaics), search and submit with mosaic rules, mosaic-aware folds
    mosaics: bool = False
    mosaic_folds: bool = False
    mosaics_csv: str | None = None  # a mosaics.csv given (--mosaics CSV), else set by the run to the one it built

    def size_of(self, mode: str) -> int:
        """The model input size of ``mode``'s folds: the size given for it, else the mode's registered default."""
        from tgs.inputs import INPUT_MODES

        return dict(self.sizes).get(mode, INPUT_MODES.get(mode).default_size)

    @property
    def layout(self) -> EnsembleLayout:
        return EnsembleLayout(Path(self.run_dir))
