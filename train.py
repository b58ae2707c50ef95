#!/usr/bin/env python
"""Train one fold of the TGS salt UNet (the 9th-place recipe by default). `python train.py --help` lists every option.

Single process:  python train.py --data-dir DATA --data-fold fold0 --log-dir runs/fold0 ...
Distributed:     torchrun --nproc_per_node=2 train.py ...   (NCCL on GPUs, gloo on CPU)
"""
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import tgs.compat  # noqa: E402,F401  (before timm / torchvision)
from tgs import options, trainer  # noqa: E402
from tgs.errors import cli  # noqa: E402


@cli
def main(argv=None) -> int:
    return trainer.run(options.parse(argv))


if __name__ == "__main__":
    sys.exit(main())
