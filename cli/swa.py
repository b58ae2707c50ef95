"""swa.py's command line: options -> engine.swa.SwaOptions -> engine.swa.run."""
from __future__ import annotations

from pathlib import Path

from cli.common import (
    ArgumentParser,
    add_amp,
    add_decoding,
    add_device,
    add_option,
    add_threads,
    new_parser,
    set_by_ensemble,
)
from tgs.errors import UserError, cli

DOC = """Stochastic weight averaging of one fold's models, BatchNorm statistics recomputed on the fold's training
images.

    python swa.py --input runs/fold0/models --output runs/fold0_swa.pth
    python swa.py --input runs/fold0/models/snapshot-e049-fold0.pth runs/fold0/models/snapshot-e099-fold0.pth \\
        --output fold0_swa.pth --data-dir DATA

Every file of a folder is averaged with weight 1; files holding the same weights (best-metric, best-loss and last
of one epoch) count once. Models of different architectures or input modes are refused. The data dir, fold, folds
file and drop-mask threshold come from the checkpoints' training config unless given. See engine/swa.py."""


def build_parser() -> ArgumentParser:
    p = new_parser("swa.py", DOC)
    set_by_ensemble(p.add_argument("--input", nargs="+", required=True,
                                   help="model files and/or folders of them (e.g. LOG_DIR/models)"),
                    "is set by ensemble.py (each fold's models)")
    set_by_ensemble(p.add_argument("--output", required=True, help="the averaged checkpoint to write"),
                    "is set by ensemble.py (RUN/MODE/FOLD_swa.pth)")
    inherited = "default: the checkpoints'"
    add_option(p, "data_dir", inherited, default=None)
    add_option(p, "data_fold", f"the fold whose training images recompute BatchNorm; {inherited}", default=None)
    add_option(p, "folds_file", inherited, default=None)
    add_option(p, "drop_mask_threshold", inherited, default=None)
    add_option(p, "batch_size", "the BatchNorm recompute; default: the run's", default=None)
    add_device(p)
    add_amp(p)
    add_threads(p)
    add_decoding(p)
    return p


def parse(argv=None):
    from engine.swa import SwaOptions

    a = build_parser().parse_args(argv)
    from tgs.io import check_output

    files = [x for x in a.input if not Path(x).is_dir()]
    check_output(a.output, "--output", {"--input": files, "--folds-file": a.folds_file}, [a.data_dir])
    out = Path(a.output)
    for folder in (Path(x) for x in a.input if Path(x).is_dir()):
        # a new file in an input folder is fine (it is not averaged); one of its models, replaced, is not
        if out.is_file() and folder.resolve() in out.resolve().parents:
            import models

            try:
                kind = models.read_checkpoint(out)["meta"].get("kind")
            except UserError:
                kind = None
            if kind != "swa":
                raise UserError(f"--output {a.output} would overwrite a model of the input --input {folder}: write "
                                "it elsewhere")
    return SwaOptions(inputs=tuple(a.input), output=a.output, data_dir=a.data_dir, data_fold=a.data_fold,
                      folds_file=a.folds_file, drop_mask_threshold=a.drop_mask_threshold, batch_size=a.batch_size,
                      device=a.device, amp=a.amp, threads=a.threads, decode_threads=a.decode_threads,
                      no_cache=a.no_cache)


@cli
def main(argv=None) -> int:
    from engine import swa

    return swa.run(parse(argv))
