"""section.py's command line: options -> engine.section.SectionOptions -> engine.section.run."""
from __future__ import annotations

import argparse
from pathlib import Path

from cli.common import (
    MODELS_HELP,
    ArgumentParser,
    add_amp,
    add_device,
    add_mosaics,
    add_option,
    add_postprocessing,
    add_threads,
    integer,
    new_parser,
    number,
    post_setting,
)
from tgs import TILE
from tgs.errors import UserError, cli
from tgs.io import check_output, require_file

DOC = """Salt on a whole seismic section or volume: the salt probability, the post-processed mask and pictures.

    python section.py runs/*/fold*_swa.pth --input line.sgy --out line-salt          # a 2D SEG-Y line
    python section.py fold0_swa.pth --input survey.sgy --out survey-salt --both-directions --inlines 120
    python section.py fold0_swa.pth --input section.png --out png-salt --scale 0.5
    python section.py fold0_swa.pth --mosaics M/mosaics.csv --mosaic 3 --data-dir DATA --out mosaic3

Inputs: SEG-Y (2D, or 3D sorted by inline or crossline; a file without an inferable geometry is read as one 2D
line when its inline or crossline numbers are constant), a PNG or a 2D .npy section (depth down the rows), or
mosaic N of mosaic.py's mosaics.csv assembled from DATA's tiles. Amplitudes become 8-bit grey by a clip (--clip
LO HI, else percentiles of a bounded sample of traces; printed); 8-bit PNGs and mosaics are used as they are.
Windows of 101x101 every 101 - --overlap pixels, reflected at the borders, through every model with flip TTA (each
with its own checkpoint's pad or resize), blended with smooth weights. Volumes go line by line; --continue continues
a killed run from its last finished line, with the same result as an uninterrupted run.

Out in DIR: probability.npy, mask.npy and section.png for a 2D section; probability.sgy and mask.sgy (float32,
the input's geometry and headers) for SEG-Y input; inline-N.png, crossline-N.png, time-K.png of a volume (default:
its middle inline). The pictures show the probability in red over the grey amplitudes and the mask's outline in
yellow."""


finite = number()  # any finite number (an amplitude)
percentile = number(0.0, 100.0)


def build_parser() -> ArgumentParser:
    p = new_parser("section.py", DOC)
    p.add_argument("models", nargs="+", help=MODELS_HELP)
    src = p.add_argument_group("input (one of)")
    src.add_argument("--input", metavar="FILE", help="SEG-Y (2D or 3D), PNG or .npy section")
    add_mosaics(src, "assemble mosaic --mosaic N of it from --data-dir's tiles")
    src.add_argument("--mosaic", type=integer(0), metavar="N", help="the mosaic number in --mosaics")
    add_option(src, "data_dir", "--mosaics: the dataset whose tiles are assembled; default: data", default=None)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    g = p.add_argument_group("amplitudes and windows")
    g.add_argument("--clip", nargs=2, type=finite, metavar=("LO", "HI"),
                   help="amplitudes LO..HI -> grey 0..255 (default: --clip-percentiles of a sample of traces)")
    g.add_argument("--clip-percentiles", nargs=2, type=percentile, metavar=("P_LO", "P_HI"), default=(1.0, 99.0),
                   help="percentiles of the sampled amplitudes that become 0 and 255 (default 1 99)")
    g.add_argument("--clip-traces", type=integer(1, 100_000), default=500,
                   help="traces sampled (evenly over the file) for the percentiles (default 500)")
    g.add_argument("--scale", type=number(0.0, 16.0, open_low=True), default=1.0,
                   help="resample the section by this factor before tiling (e.g. 0.5 halves it; default 1)")
    g.add_argument("--overlap", type=integer(0, TILE - 1), default=TILE // 2,
                   help=f"pixels shared by neighbouring windows (default {TILE // 2}, half a tile)")
    v = p.add_argument_group("volumes")
    v.add_argument("--both-directions", action="store_true", help="predict crosslines too and average them in")
    v.add_argument("--inlines", nargs="+", type=int, default=(), metavar="N", help="pictures of these inlines")
    v.add_argument("--crosslines", nargs="+", type=int, default=(), metavar="N", help="pictures of these crosslines")
    v.add_argument("--time-slices", nargs="+", type=integer(0), default=(), metavar="K",
                   help="pictures of these time slices (sample indices)")
    v.add_argument("--continue", dest="resume", action="store_true",
                   help="continue a killed run on a volume from its last line")
    d = p.add_argument_group("device")
    add_device(d)
    add_option(d, "batch_size", "prediction", default=64)
    add_amp(d)
    add_option(d, "channels_last")
    add_threads(d)
    add_postprocessing(p)
    return p


def check_inputs(args: argparse.Namespace) -> None:
    if bool(args.input) == bool(args.mosaics):
        raise UserError("give --input FILE or --mosaics CSV --mosaic N (exactly one)")
    if args.mosaics and args.mosaic is None:
        raise UserError("--mosaics needs --mosaic N (the mosaic to predict)")
    if args.mosaic is not None and not args.mosaics:
        raise UserError("--mosaic goes with --mosaics CSV")
    if args.data_dir and not args.mosaics:
        raise UserError("--data-dir goes with --mosaics (the dataset whose tiles are assembled)")
    if args.clip and not args.clip[0] < args.clip[1]:
        raise UserError(f"--clip {args.clip[0]:g} {args.clip[1]:g}: LO must be below HI")
    if not args.clip_percentiles[0] < args.clip_percentiles[1]:
        raise UserError("--clip-percentiles: P_LO must be below P_HI")
    for i, x in enumerate(args.models):
        if Path(x).resolve() in {Path(y).resolve() for y in args.models[:i]}:
            raise UserError(f"{x} is listed twice")
        require_file(x, "")
    if args.input:
        require_file(args.input, "--input ")
    out = Path(args.out)
    inputs = {"MODELS": args.models, "--input": args.input, "--mosaics": args.mosaics,
              "--post-config": args.post_config}
    check_output(out, "--out", inputs, [args.data_dir])
    for name in ("probability.sgy", "mask.sgy", "probability.npy", "mask.npy", "section.png"):
        check_output(out / name, "--out", inputs, [args.data_dir])
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")


def parse(argv=None):
    from engine.section import SectionOptions

    args = build_parser().parse_args(argv)
    check_inputs(args)
    post, source = post_setting(args)
    if post.rules:
        raise UserError("the mosaic rules work on tiles of a dataset, not on sections: leave them out "
                        "(--mosaic-rules is test.py's)")
    return SectionOptions(
        models=tuple(args.models), out=args.out, input=args.input, mosaics=args.mosaics, mosaic=args.mosaic,
        data_dir=args.data_dir, clip=tuple(args.clip) if args.clip else None,
        clip_percentiles=tuple(args.clip_percentiles), clip_traces=args.clip_traces, scale=args.scale,
        overlap=args.overlap, both_directions=args.both_directions, inlines=tuple(args.inlines),
        crosslines=tuple(args.crosslines), time_slices=tuple(args.time_slices), resume=args.resume, post=post,
        post_source=source, device=args.device, batch_size=args.batch_size, amp=args.amp,
        channels_last=args.channels_last, threads=args.threads)


@cli
def main(argv=None) -> int:
    from engine import section

    return section.run(parse(argv))
