#!/usr/bin/env python
"""Score a submission with the competition metric, check a test submission, or search the post-processing.

The options and the work are in cli/score.py and the library below it.
"""
import sys

from cli.score import main  # no torch needed: tgs.compat (for timm) is left out, for a fast start

if __name__ == "__main__":
    sys.exit(main())
