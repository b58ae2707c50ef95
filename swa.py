#!/usr/bin/env python
"""Stochastic weight averaging of one fold's models, BatchNorm statistics recomputed on the fold's training images.

    python swa.py --input runs/fold0/models --output runs/fold0_swa.pth
    python swa.py --input runs/fold0/models/snapshot-e049-fold0.pth runs/fold0/models/snapshot-e099-fold0.pth \\
        --output fold0_swa.pth --data-dir DATA

Every file of a folder is averaged with weight 1; files holding the same weights (best-metric, best-loss and last
of one epoch) count once. Models of different architectures or input modes are refused. The data dir, fold, folds
file and drop-mask threshold come from the checkpoints' meta unless given. See tgs/swa.py.
"""
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import tgs.compat  # noqa: E402,F401  (before timm / torchvision)
import argparse  # noqa: E402
import time  # noqa: E402

from tgs.errors import UserError, cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", nargs="+", required=True, help="model files and/or folders of them (e.g. LOG_DIR/models)")
    p.add_argument("--output", required=True, help="the averaged checkpoint to write")
    p.add_argument("--data-dir", help="dataset in Kaggle's layout (default: the checkpoints' data dir)")
    p.add_argument("--data-fold", help="fold whose training images recompute BatchNorm (default: the checkpoints')")
    p.add_argument("--folds-file", help="CSV id,fold as in train.py (default: the checkpoints')")
    p.add_argument("--drop-mask-threshold", type=int, help="as in train.py (default: the checkpoints')")
    p.add_argument("--batch-size", type=int, help="BatchNorm recompute batch (default: the run's --batch-size)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--dataload-workers-nums", type=int, default=0, help="PNG decoding threads (0: automatic)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the decoded-PNG cache")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    return args


def _from_meta(flag, meta: dict, key: str, default=None):
    """The flag when given, else the averaged checkpoints' setting."""
    import models

    return flag if flag is not None else models.meta_value(meta, key, default)


@cli
def main(argv=None) -> int:
    args = parse_args(argv)
    import models
    from tgs import distributed, runtime, swa, trainer

    runtime.setup_cpu(args.threads)
    device = distributed.resolve_device(args.device)
    t0 = time.time()
    paths = swa.expand_inputs(args.input, exclude=[args.output])
    avg = swa.average(paths, allow_mixed_folds=args.data_fold is not None)
    meta = avg.meta
    data = argparse.Namespace(
        data_dir=_from_meta(args.data_dir, meta, "data_dir", "data"),
        data_fold=_from_meta(args.data_fold, meta, "fold"),
        folds_file=_from_meta(args.folds_file, meta, "folds_file"),
        drop_mask_threshold=int(_from_meta(args.drop_mask_threshold, meta, "drop_mask_threshold", 0) or 0),
        no_cache=args.no_cache)
    if data.data_fold is None:
        raise UserError(f"{paths[0]} does not record its fold; give --data-fold")
    train, tr, _ = trainer.split_data(data)
    batch = args.batch_size or int((meta.get("options") or {}).get("batch_size") or 32)
    batches = swa.update_bn(avg.model, avg.input_spec, train.images[tr], device, batch, args.amp)
    epochs = [s.epoch for s in avg.sources]
    out_meta = {
        "kind": "swa", "fold": data.data_fold, "epoch": max((e for e in epochs if isinstance(e, int)), default=None),
        "sources": [str(s.path) for s in avg.sources], "source_epochs": epochs,
        "duplicates": [[str(a), str(b)] for a, b in avg.skipped],
        "data_dir": str(data.data_dir), "folds_file": data.folds_file, "drop_mask_threshold": data.drop_mask_threshold,
        "bn_images": int(len(tr)), "bn_batch_size": batch, "bn_batches": batches,
        "options": meta.get("options", {}), "comment": meta.get("comment", ""),
    }
    models.save_checkpoint(args.output, avg.model, avg.input_spec, out_meta)
    spec = avg.input_spec
    print(f"wrote {args.output}: average of {len(avg.sources)} models (epochs {', '.join(map(str, epochs))})"
          f"{f', {len(avg.skipped)} duplicates skipped' if avg.skipped else ''}; BatchNorm recomputed on "
          f"{len(tr)} training images of {data.data_fold} ({spec.mode} {spec.source}->{spec.size}, "
          f"{batches} batches of {batch}) in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
