#!/usr/bin/env python
"""Reports of a training run or of saved probabilities, as PNG plots and CSV tables (see --help).

The options and the work are in cli/report.py and the library below it.
"""
import sys

import tgs.compat  # noqa: F401  (environment and torchvision shim, before anything imports timm)
from cli.report import main

if __name__ == "__main__":
    sys.exit(main())
