#!/usr/bin/env python
"""Rebuild the mosaics of the train and test tiles: ``python mosaic.py --data-dir DATA --out DIR`` (cli/mosaic.py)."""
import sys

import tgs.compat  # noqa: F401
from cli.mosaic import main

if __name__ == "__main__":
    sys.exit(main())
