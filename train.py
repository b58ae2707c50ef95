#!/usr/bin/env python
"""Train one fold of the TGS salt UNet (the 9th-place recipe by default). `python train.py --help` lists every option.

Single process:  python train.py --data-dir DATA --data-fold fold0 --log-dir runs/fold0 ...
Distributed:     torchrun --nproc_per_node=2 train.py ...   (NCCL on GPUs, gloo on CPU)

The options and the work are in cli/train.py and the library below it.
"""
import sys

import tgs.compat  # noqa: F401  (environment and torchvision shim, before anything imports timm)
from cli.train import main

if __name__ == "__main__":
    sys.exit(main())
