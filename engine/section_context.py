"""Tiles predicted with their neighbours around them: each tile of an assembled mosaic (mosaic.py's layout) is
predicted as part of its whole mosaic (windows over the mosaic, engine.section.predict_line) and cut back to the
tile, instead of alone. test.py ``--mosaic-context`` (test or out-of-fold predictions) uses it; tiles in no mosaic
keep their own prediction. Only images are used (never a mask), so out-of-fold predictions stay honest."""
from __future__ import annotations

import numpy as np

from engine.section import Predictor, predict_line
from engine.section_sources import MosaicTiles, cut_cells
from tgs import TILE


def context_probs(ids: np.ndarray, probs: np.ndarray, mosaics_csv: str, data_dir: str, predictor: Predictor,
                  overlap: int = TILE // 2, log=print) -> np.ndarray:
    """``probs`` (N, 101, 101) of the tiles ``ids`` with those of the tiles inside a mosaic replaced by their
    prediction within the mosaic (one mosaic in memory at a time)."""
    source = MosaicTiles.read(mosaics_csv, data_dir)
    m = source.mosaics
    where = m.index_of(ids)  # -1: not in a mosaic
    out = np.array(probs, np.float32, copy=True)
    grids = m.grids()
    numbers = np.unique(m.mosaic[where[where >= 0]])
    position = {ident: i for i, ident in enumerate(np.asarray(ids, str))}
    for number in numbers:  # loop per mosaic
        image, _, tile_ids, cells = source.assemble(grids[number])
        prob = predict_line(image, predictor, overlap)
        mine = np.array([t in position for t in tile_ids])
        out[[position[t] for t in tile_ids[mine]]] = cut_cells(prob, cells[mine])
    log(f"mosaic context: {int((where >= 0).sum())} of {len(ids)} tiles predicted within {len(numbers)} mosaics")
    return out
