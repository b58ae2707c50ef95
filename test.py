#!/usr/bin/env python
"""Predict with one model or an ensemble, post-process, and write a submission and the probabilities.

    python test.py --tta fold0_swa.pth --output-prefix fold0            # fold0-submission.csv, fold0-probabilities.npz
    python test.py --tta runs/*/fold*_swa.pth --output-prefix ens       # fold averaging (pad and resize models mixed)
    python test.py --from-probabilities a.npz b.npz --output-prefix ens --data-dir DATA   # average saved predictions
    python test.py --split valid --data-fold fold0 --tta fold0_swa.pth --output-prefix oof/fold0   # out-of-fold
    python test.py --merge-oof oof/fold*-probabilities.npz --output-prefix oof --data-dir DATA     # all folds' OOF

Every model pads or resizes with its own checkpoint's input config and comes back at 101x101 (tgs.predict.forward,
the code path of train.py's validation); probabilities are averaged in one running sum, one model in memory at a
time. Post-processing (tgs/postprocess.py): --threshold, --min-area, --gate, flat images empty (--no-flat to keep
them); `score.py --search OOF.npz --truth DATA/train.csv` finds the best setting on out-of-fold predictions.
"""
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import tgs.compat  # noqa: E402,F401  (before timm / torchvision)
import argparse  # noqa: E402
import shlex  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from tgs import postprocess  # noqa: E402
from tgs.errors import UserError, cli  # noqa: E402

COMPETITION = "tgs-salt-identification-challenge"


def build_parser() -> argparse.ArgumentParser:
    d = postprocess.DEFAULTS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", help="checkpoints (models.save_checkpoint files, e.g. swa.py outputs)")
    src = p.add_argument_group("other sources")
    src.add_argument("--from-probabilities", nargs="+", metavar="NPZ", help="average saved probabilities instead")
    src.add_argument("--merge-oof", nargs="+", metavar="NPZ",
                     help="merge per-fold out-of-fold probabilities (disjoint ids) into one file, and score it")
    g = p.add_argument_group("prediction")
    g.add_argument("--tta", action="store_true", help="horizontal-flip TTA")
    g.add_argument("--output-prefix", required=True,
                   help="writes PREFIX-submission.csv and PREFIX-probabilities.npz (e.g. runs/fold0)")
    g.add_argument("--split", choices=("test", "valid"), default="test",
                   help="test: the test set; valid: --data-fold's validation images (out-of-fold)")
    g.add_argument("--data-dir", help="dataset in Kaggle's layout (default: the first checkpoint's, else 'data')")
    g.add_argument("--data-fold", help="--split valid: the fold (default: the checkpoints')")
    g.add_argument("--folds-file", help="CSV id,fold as in train.py (default: the checkpoints')")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none", help="mixed precision")
    g.add_argument("--channels-last", action="store_true")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    g.add_argument("--dataload-workers-nums", type=int, default=0, help="PNG decoding threads (0: automatic)")
    g.add_argument("--no-cache", action="store_true", help="do not read or write the decoded-PNG cache")
    g.add_argument("--message", help="the -m text of the printed kaggle command")
    pp = p.add_argument_group("post-processing (defaults: --post-config's file, else tgs/postprocess.py's)")
    pp.add_argument("--post-config", metavar="JSON",
                    help="the setting of score.py --search --save-best JSON; the flags below override its values")
    pp.add_argument("--threshold", type=float, help=f"salt where probability > this (default {d.threshold:g})")
    pp.add_argument("--min-area", type=int,
                    help=f"predictions with fewer salt pixels become empty (default {d.min_area})")
    pp.add_argument("--gate", type=postprocess.parse_gate, default=argparse.SUPPRESS,
                    help="empty where the image-level salt probability < this (none: off; default off)")
    pp.add_argument("--no-flat", dest="flat", action="store_const", const=False,
                    help="keep predictions on flat single-valued images (default: empty)")
    return p


def post_setting(args: argparse.Namespace) -> tuple:
    """(PostProcess, where it comes from): --post-config's file or the defaults, overridden by the flags given."""
    given = {k: getattr(args, k) for k in ("threshold", "min_area", "flat") if getattr(args, k) is not None}
    if hasattr(args, "gate"):  # --gate none is a value (off), so "not given" is the attribute's absence
        given["gate"] = args.gate
    return postprocess.resolve(args.post_config, given)


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    sources = sum(bool(x) for x in (args.models, args.from_probabilities, args.merge_oof))
    if sources != 1:
        raise UserError("give model files, or --from-probabilities NPZ ..., or --merge-oof NPZ ... (exactly one)")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.data_fold and args.split != "valid" and not args.merge_oof:
        raise UserError("--data-fold goes with --split valid")
    for paths in (args.models, args.from_probabilities or [], args.merge_oof or []):
        dup = [x for i, x in enumerate(paths) if Path(x).resolve() in {Path(y).resolve() for y in paths[:i]}]
        if dup:
            raise UserError(f"{dup[0]} is listed twice")
        missing = [x for x in paths if not Path(x).is_file()]
        if missing:
            raise UserError(f"{missing[0]} does not exist")
    args.post, args.post_source = post_setting(args)
    return args


def _fraction_empty(masks: np.ndarray) -> str:
    empty = ~masks.reshape(len(masks), -1).any(axis=1)
    return f"empty predictions: {empty.mean():.1%} ({int(empty.sum())} of {len(masks)})"


def _score_lines(masks, truth, ids_note: str) -> list[str]:
    from tgs import metric

    rep = metric.report(masks, truth)
    return [f"out-of-fold score of {ids_note}:", *rep.lines()]


def _kaggle_line(csv: Path, message: str) -> str:
    return f"kaggle competitions submit -c {COMPETITION} -f {shlex.quote(str(csv))} -m {shlex.quote(message)}"


def _describe(args, n_models: int) -> str:
    what = f"{n_models} model{'s' if n_models != 1 else ''}{' + flip TTA' if args.tta else ''}"
    return f"{what}; {args.post.describe()}"


def predict_with_models(args, timer) -> tuple:
    """(image set, probs, image_probs, model names) from checkpoints."""
    import models
    from tgs import distributed, inference, runtime

    runtime.setup_cpu(args.threads)
    device = distributed.resolve_device(args.device)
    first = models.read_checkpoint(args.models[0])["meta"]
    data_dir = args.data_dir or models.meta_value(first, "data_dir") or "data"
    workers = args.dataload_workers_nums or None
    t0 = time.perf_counter()
    if args.split == "valid":
        fold = args.data_fold or first.get("fold")
        if not fold:
            raise UserError(f"{args.models[0]} does not record its fold; give --data-fold")
        folds_file = args.folds_file or models.meta_value(first, "folds_file")
        data = inference.valid_set(data_dir, fold, folds_file, cache=not args.no_cache, workers=workers)
    else:
        data = inference.test_set(data_dir, cache=not args.no_cache, workers=workers)
    timer.add("data", time.perf_counter() - t0)
    print(f"{args.split} set: {len(data)} images from {data_dir}{f' ({data.fold})' if data.fold else ''}; "
          f"{len(args.models)} models on {device}", flush=True)

    def check(path, loaded):
        fold = loaded.meta.get("fold")
        if data.split == "valid" and fold is not None and fold != data.fold:
            raise UserError(f"{path} was trained on {fold}, not {data.fold}: its out-of-fold images are another "
                            f"fold's (predict each fold's validation images with that fold's models)")

    t0 = time.perf_counter()
    probs, image_probs, names, forward_s = inference.predict_models(
        args.models, data.images, device, batch_size=args.batch_size, tta=args.tta, amp=args.amp,
        channels_last=args.channels_last, check=check, log=lambda s: print(s, flush=True))
    timer.add("loading models", time.perf_counter() - t0 - forward_s)
    timer.add("prediction", forward_s)
    return data, probs, image_probs, names


def from_probabilities(args, timer) -> tuple:
    from tgs import inference

    t0 = time.perf_counter()
    data, mean = inference.saved_predictions(args.from_probabilities, args.data_dir or "data",
                                             cache=not args.no_cache, workers=args.dataload_workers_nums or None)
    timer.add("probabilities and data", time.perf_counter() - t0)
    print(f"averaged {len(args.from_probabilities)} probability files ({mean.split}, {len(data)} images)", flush=True)
    return data, mean.probs, mean.image_probs, mean.models


def merge(args, timer) -> int:
    from tgs import inference, probabilities

    t0 = time.perf_counter()
    merged, data, n_train = inference.merged_oof(args.merge_oof, args.data_dir, cache=not args.no_cache,
                                                 workers=args.dataload_workers_nums or None)
    npz = probabilities.save(f"{args.output_prefix}-probabilities.npz", merged.ids, merged.probs,
                             merged.image_probs, merged.models, "valid")
    print(f"merged {len(args.merge_oof)} out-of-fold files: {len(merged)} images -> {npz}")
    if data is None:
        print("(give --data-dir to order them as train.csv and score them)")
        return 0
    print(f"covers {len(data)} of the {n_train} training images{' (all of them)' if len(data) == n_train else ''}")
    masks = postprocess.apply(merged.probs, merged.image_probs, data.images, args.post)
    print(f"post-processing: {args.post.describe()} ({args.post_source})")
    print(_fraction_empty(masks))
    print("\n".join(_score_lines(masks, data.masks, f"{len(data)} images")))
    timer.add("merge", time.perf_counter() - t0)
    print(f"search the post-processing: python score.py --search {shlex.quote(str(npz))} --truth "
          f"{shlex.quote(str(Path(args.data_dir) / 'train.csv'))}")
    return 0


@cli
def main(argv=None) -> int:
    from tgs import inference

    args = parse_args(argv)
    timer = inference.Timer()
    if args.merge_oof:
        return merge(args, timer)
    if args.models:
        data, probs, image_probs, names = predict_with_models(args, timer)
    else:
        data, probs, image_probs, names = from_probabilities(args, timer)

    t0 = time.perf_counter()
    masks = postprocess.apply(probs, image_probs, data.images, args.post)
    timer.add("post-processing", time.perf_counter() - t0)
    t0 = time.perf_counter()
    csv, npz = inference.write(args.output_prefix, data.ids, probs, image_probs, masks, names, data.split)
    timer.add("writing", time.perf_counter() - t0)
    print(f"post-processing: {args.post.describe()} ({args.post_source})")
    print(_fraction_empty(masks))
    print(f"wrote {csv} and {npz}")
    if data.split == "valid":
        print("\n".join(_score_lines(masks, data.masks, f"{len(data)} images"
                                     f"{f' of {data.fold}' if data.fold else ''}")))
    print(timer.line())
    if data.split == "test":
        message = args.message or _describe(args, len(names))
        print("submit with:")
        print(_kaggle_line(csv, message))
    return 0


if __name__ == "__main__":
    sys.exit(main())
