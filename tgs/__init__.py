"""Ground floor of the TGS salt pipeline: the competition's formats and geometry, with no knowledge of models or
training. Errors (one line, exit 2), atomic IO, RLE, the metric, submission and prediction files, PNG tiles, the
input spec (pad/resize in and out of a model), post-processing, the mosaic layout, process set-up.

Nothing here imports ``datasets``, ``models``, ``losses``, ``engine`` or ``cli`` (tests/test_layers.py checks).
"""

TILE = 101  #: side of every image and mask of the competition, in pixels
