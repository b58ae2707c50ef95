#!/usr/bin/env python
"""Salt on a whole seismic section or volume: SEG-Y (2D or 3D), PNG, .npy or an assembled mosaic in; the salt
probability, the post-processed mask and pictures out (see --help and docs/sections.md).

The options and the work are in cli/section.py and the library below it.
"""
import sys

import tgs.compat  # noqa: F401  (environment and torchvision shim, before anything imports timm)
from cli.section import main

if __name__ == "__main__":
    sys.exit(main())
