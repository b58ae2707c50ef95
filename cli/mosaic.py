"""``python mosaic.py --data-dir DATA --out DIR``: rebuild the mosaics (the jigsaw) of the train and test tiles.

Writes ``DIR/mosaics.csv`` (``id,mosaic,row,col``: the tiles with at least one neighbour) and ``DIR/pairs.csv``
(``a,b,rel,score``: the matched edges), both atomically, and prints how many tiles were placed and the mosaic sizes.
"""
from __future__ import annotations

import argparse

from cli.common import add_option, new_parser, number
from datasets import mosaic
from tgs.errors import UserError, cli
from tgs.io import check_output


def build_parser() -> argparse.ArgumentParser:
    p = new_parser("mosaic.py", __doc__.strip("`"))
    add_option(p, "data_dir", "its train and test images are used", required=True, passed_on=False)
    p.add_argument("--out", required=True, help="folder for mosaics.csv and pairs.csv (created if missing)")
    p.add_argument("--ratio", type=number(0, 1, open_low=True), default=None,
                   help="accept a pair alone only when its distance is below RATIO times the second best, both ways "
                        "(default: calibrated on the data, see docs/mosaics.md; lower is stricter)")
    add_option(p, "no_cache")
    return p


@cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.out.strip():
        raise UserError("--out: an empty path; give the folder for mosaics.csv and pairs.csv")
    check_output(args.out, "--out", data_dirs=[args.data_dir])
    s = mosaic.build(args.data_dir, args.out, args.ratio, cache=not args.no_cache)
    print(f"placed {s['with_neighbour']} of {s['tiles']} tiles ({s['with_neighbour_share']:.1%}) in {s['mosaics']} "
          f"mosaics: {s['train_with_neighbour']} train, {s['test_with_neighbour']} test; {s['pairs']} pairs kept of "
          f"{s['candidates']} matched")
    print(f"test tiles next to a train tile: {s['test_next_to_train']} ({s['test_next_to_train_share']:.1%} of the "
          "test set)")
    if args.ratio is not None:
        print(f"ratio threshold: {args.ratio} (given)")
    elif s["thresholds"]:
        print("ratio thresholds: " + ", ".join(f"{r} {t:.3f}" for r, t in s["thresholds"].items())
              + f" (calibrated on this data; under {mosaic.NULL_TAIL / mosaic.NULL_RATE:.0f} edges a side, too few to "
                f"calibrate, {mosaic.RATIO_RANGE[0]})")
    print("largest mosaics: " + (", ".join(map(str, s["largest"])) or "none"))
    print("mosaic sizes: " + ", ".join(f"{label} tiles: {count}" for label, count in s["histogram"]))
    print(f"wrote {s['out']}/mosaics.csv and {s['out']}/pairs.csv")
    return 0
