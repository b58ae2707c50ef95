#!/usr/bin/env python
"""Stochastic weight averaging of one fold's models, BatchNorm recomputed on its training images (see --help).

The options and the work are in cli/swa.py and the library below it.
"""
import sys

import tgs.compat  # noqa: F401  (environment and torchvision shim, before anything imports timm)
from cli.swa import main

if __name__ == "__main__":
    sys.exit(main())
