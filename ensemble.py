#!/usr/bin/env python
"""Train, average and ensemble every fold in one command: the 9th place's 20-model ensemble (see --help).

The options and the work are in cli/ensemble.py and the library below it.
"""
import sys

import tgs.compat  # noqa: F401  (environment and torchvision shim, before anything imports timm)
from cli.ensemble import main

if __name__ == "__main__":
    sys.exit(main())
