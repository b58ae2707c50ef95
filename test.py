#!/usr/bin/env python
"""Predict with one model or an ensemble, post-process, and write a submission and the probabilities (see --help).

The options and the work are in cli/test.py and the library below it.
"""
import sys

import tgs.compat  # noqa: F401  (environment and torchvision shim, before anything imports timm)
from cli.test import main

if __name__ == "__main__":
    sys.exit(main())
