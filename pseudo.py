#!/usr/bin/env python
"""Choose pseudo-labels among the test images from saved test predictions (see --help).

The options and the work are in cli/pseudo.py and the library below it.
"""
import sys

import tgs.compat  # noqa: F401  (environment and torchvision shim, before anything imports timm)
from cli.pseudo import main

if __name__ == "__main__":
    sys.exit(main())
