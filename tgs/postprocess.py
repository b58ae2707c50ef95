"""From salt probabilities to submitted masks: the post-processing setting, its steps, and its file.

Post-processing (:func:`apply`), vectorised over the whole batch (numpy operations on (N, H, W) arrays, no
Python loop per image), in this order:

1. threshold: a pixel is salt when its probability is strictly above ``threshold``;
2. minimum salt area: a prediction with fewer than ``min_area`` salt pixels becomes empty;
3. empty-image gating: an image whose image-level "has salt" probability is below ``gate`` becomes empty
   (off when ``gate`` is None; an unknown image probability, NaN, never gates);
4. flat images: an image whose pixels all have one value gets an empty mask (on real TGS data these carry no
   information and their masks are empty).

A setting (:class:`PostProcess`) also names the mosaic rules (:mod:`tgs.mosaic_rules`) that run after these steps
where the layout and the known train masks are at hand (test.py ``--mosaics``); :func:`apply` does not run them,
so callers without mosaics use it unchanged.

Defaults (:data:`DEFAULTS`): threshold 0.5, min area 0, gating off, flat on. These are the neutral settings: the
synthetic data of this repository cannot tune anything for the real data, and ``score.py --search OOF.npz
--truth DATA/train.csv`` (:mod:`tgs.search`) searches a run's out-of-fold predictions and keeps a setting only when
its held-out gain over these defaults is credible; ``--save-best post.json`` writes the chosen setting and how it
was found (:class:`Record`) for ``test.py --post-config post.json`` (flags given to test.py override the file's
values). ``ensemble.py`` does both: its submission uses the setting chosen on its own out-of-fold predictions.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from tgs import TILE
from tgs.credibility import Verdict
from tgs.errors import UserError, excerpt
from tgs.io import read_config_text, require_file
from tgs.mosaic_rules import parse_rules
from tgs.options import Option

_CHUNK = 512  # images per block in apply(): bounds the temporaries


def _value(default, kind: str, help: str, **kw):
    """A post-processing value: a field declaring its :class:`~tgs.options.Option` (kind, bounds, help). The
    command-line flags (``cli.common.add_postprocessing``), the checks of a setting built in code or read from a
    post-config file, and :meth:`PostProcess.flags` are derived from it: the flag is ``--NAME`` with ``-`` for
    ``_``, a bool that defaults to true is turned off by ``--no-NAME`` (its help says what that flag does), and an
    optional number is off as ``none``."""
    return field(default=default, metadata={"option": Option(kind, help, **kw)})


@dataclass(frozen=True)
class PostProcess:
    """One post-processing setting: the steps of :func:`apply` and the mosaic rules (:mod:`tgs.mosaic_rules`,
    names in the order of :data:`tgs.mosaic_rules.RULES`) that run after it where a layout is known."""

    threshold: float = _value(0.5, "float", "salt where probability > this", low=0.0, high=1.0, open_high=True)
    min_area: int = _value(0, "int", "predictions with fewer salt pixels become empty", low=0, high=TILE * TILE)
    gate: float | None = _value(None, "float", "empty where the image-level salt probability < this",
                                low=0.0, high=1.0, optional=True)
    flat: bool = _value(True, "bool", "keep predictions on flat single-valued images (default: empty)")
    rules: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "rules", parse_rules(self.rules, "mosaic rules"))
        for name, o in VALUES.items():
            value = getattr(self, name)
            value = value.item() if isinstance(value, np.generic) else value
            object.__setattr__(self, name, o.coerce(value, flag(name)))

    def to_dict(self) -> dict:
        return {**asdict(self), "rules": list(self.rules)}

    def describe(self) -> str:
        gate = "off" if self.gate is None else f"{self.gate:g}"
        rules = f"; mosaic rules {', '.join(self.rules)}" if self.rules else ""
        return (f"threshold {self.threshold:g}, min area {self.min_area}, gate {gate}, "
                f"flat images {'empty' if self.flat else 'as predicted'}{rules}")

    def flags(self) -> str:
        """The test.py flags that select this setting (rules also need ``--mosaics DIR/mosaics.csv``)."""
        words = []
        for name, o in VALUES.items():
            value = getattr(self, name)
            if o.kind == "bool":
                words += [] if value else [flag(name)]
            else:
                words += [flag(name), "none" if value is None else f"{value:g}"]
        return " ".join(words + ([f"--mosaic-rules {','.join(self.rules)}"] if self.rules else []))


VALUES = {f.name: f.metadata["option"] for f in fields(PostProcess) if "option" in f.metadata}  # name -> Option
FIELDS = (*VALUES, "rules")  # the keys of a setting in a post-config file


def flag(name: str) -> str:
    """The command-line flag of the post-processing value ``name`` (``--no-flat``, ``--min-area``)."""
    negated = VALUES[name].kind == "bool" and PostProcess.__dataclass_fields__[name].default is True
    return ("--no-" if negated else "--") + name.replace("_", "-")


DEFAULTS = PostProcess()


# -- the post-config file (postprocess.json) ------------------------------------------------------------------------
@dataclass(frozen=True)
class RuleChange:
    """What a mosaic rule does alone on the out-of-fold tiles: tiles changed and the mean score change."""

    tiles: int
    score_change: float


@dataclass(frozen=True)
class Record:
    """A post-config file (``score.py --search --save-best``, ``RUN/postprocess.json``; ``test.py --post-config``
    reads it): the setting and, when the search wrote it, how it was found. The setting's fields are the file's top
    level keys (a hand-written file holds just those); every other field is None where the file does not give it.
    :func:`load_setting` reads it strictly: an unknown key, a missing setting key or a value of the wrong kind is
    one line naming the file and the key."""

    setting: PostProcess
    score: float | None = None  # the chosen setting's in-sample score (with the kept mosaic rules)
    default_score: float | None = None
    images: int | None = None  # out-of-fold images searched
    searched_on: str | None = None  # the out-of-fold probabilities file
    in_sample_best: PostProcess | None = None
    in_sample_gain: float | None = None
    held_out_gain: float | None = None  # the full grid's nested gain (None: not estimable)
    threshold_held_out_gain: float | None = None
    chosen_held_out_gain: float | None = None  # the chosen family's (0 for the defaults)
    why: str | None = None  # why the setting was chosen
    folds: dict | None = None  # fold -> images
    empty_share: float | None = None  # of the chosen setting's masks (with the kept rules)
    true_empty_share: float | None = None
    credibility: dict | None = None  # what was judged ('threshold', 'all', 'mosaic rules' ...) -> Verdict
    mosaics: str | None = None  # the mosaics.csv the rules were searched with
    rules_in_sample_gain: float | None = None
    rules_held_out_gain: float | None = None  # the kept rules' nested gain (the best set's when none is kept)
    rules_why: str | None = None
    rule_changes: dict | None = None  # rule -> RuleChange
    rules_by_fold: dict | None = None  # fold -> the rules chosen without its truth (tuple)

    def to_json(self) -> dict:
        """The file's JSON object: the setting's fields, then the fields that are given."""
        out = self.setting.to_dict()
        for f in fields(self)[1:]:
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = _ENCODE.get(f.name, lambda v: v)(value)
        return out

    @classmethod
    def from_json(cls, data, where: str) -> "Record":
        """The record of a parsed JSON file; ``where`` names it in the one-line errors."""
        if not isinstance(data, dict):
            raise UserError(f"{where}: expected a JSON object with {', '.join(VALUES)}")
        known = (*FIELDS, *(f.name for f in fields(cls)[1:]))
        for key in data:
            if key not in known:
                near = difflib.get_close_matches(str(key), known, n=1, cutoff=0.75)
                hint = f"did you mean {near[0]}?" if near else f"a post-config file holds {', '.join(FIELDS)} and " \
                                                               "what score.py --search records"
                raise UserError(f"{where}: unknown key {excerpt(key)} ({hint})")
        values = {key: _decode(key, value, where) for key, value in data.items() if key not in FIELDS}
        return cls(_setting_of(data, where), **values)


_NUMBER = (int, float)


def _is_number(value) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _setting_of(data: dict, where: str) -> PostProcess:
    """The setting of a JSON object (the file's top level, or its ``in_sample_best``): each value checked by its
    declaration (:data:`VALUES`), the error naming the key."""
    missing = [k for k in VALUES if k not in data]
    if missing:
        raise UserError(f"{where}: missing {', '.join(missing)}")
    values = {k: o.coerce(data[k], f"{where}: {k}") for k, o in VALUES.items()}
    rules = data.get("rules", [])  # a hand-written setting may leave the rules out
    if not (isinstance(rules, list) and all(isinstance(r, str) for r in rules)):
        raise UserError(f"{where}: rules = {excerpt(rules)} is not a valid value (a list of rule names)")
    try:
        return PostProcess(**values, rules=parse_rules(rules, "rules"))
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def _mapping(check, what: str):
    """A decoder of a JSON object whose values each pass ``check`` (a decoder of one value)."""
    def decode(value):
        if not isinstance(value, dict):
            raise ValueError(f"an object of {what}")
        return {str(k): check(v) for k, v in value.items()}
    return decode


def _plain(ok, what: str, convert=lambda v: v):
    def decode(value):
        if not ok(value):
            raise ValueError(what)
        return convert(value)
    return decode


def _rule_change(value) -> RuleChange:
    if not (isinstance(value, dict) and set(value) == {"tiles", "score_change"} and _is_int(value["tiles"])
            and _is_number(value["score_change"])):
        raise ValueError('{"tiles": N, "score_change": X} per rule')
    return RuleChange(value["tiles"], float(value["score_change"]))


def _rule_names(value) -> tuple:
    if not (isinstance(value, list) and all(isinstance(r, str) for r in value)):
        raise ValueError("a list of rule names per fold")
    try:
        return parse_rules(value, "rules_by_fold")
    except UserError as exc:
        raise ValueError(str(exc)) from None


def _verdict(value) -> Verdict:
    names = [f.name for f in fields(Verdict)]
    if not isinstance(value, dict) or sorted(value) != sorted(names):
        raise ValueError(f"an object with {', '.join(names)}")
    return Verdict(**{k: (float("nan") if value[k] is None and k in ("gain", "spread", "p_value") else value[k])
                      for k in names} | {"fold_gains": tuple(value["fold_gains"] or ())})


_float = _plain(lambda v: v is None or _is_number(v), "a number or null",
                lambda v: None if v is None else float(v))
_text = _plain(lambda v: isinstance(v, str), "a string")
_DECODE = {
    "images": _plain(_is_int, "a whole number"), "searched_on": _text, "why": _text, "mosaics": _text,
    "rules_why": _text, "folds": _mapping(_plain(_is_int, "images"), "images per fold"),
    "rule_changes": _mapping(_rule_change, "rule changes"), "rules_by_fold": _mapping(_rule_names, "rule lists"),
    "credibility": _mapping(_verdict, "verdicts"),
}
_ENCODE = {"in_sample_best": PostProcess.to_dict,
           "rule_changes": lambda m: {r: asdict(c) for r, c in m.items()},
           "rules_by_fold": lambda m: {f: list(r) for f, r in m.items()},
           "credibility": lambda m: {k: v.to_dict() for k, v in m.items()}}


def _decode(key: str, value, where: str):
    if key == "in_sample_best":
        if not isinstance(value, dict):
            raise UserError(f"{where}: in_sample_best = {excerpt(value)} is not a valid value (a setting)")
        return _setting_of(value, f"{where}: in_sample_best")
    try:
        return _DECODE.get(key, _float)(value)
    except ValueError as exc:
        raise UserError(f"{where}: {key} = {excerpt(value)} is not a valid value ({exc})") from None


def save_setting(path, setting: PostProcess, info: Record | dict | None = None) -> None:
    """Write ``setting`` and how it was found (a :class:`Record`, or its fields as a dict) as JSON, atomically.
    ``score.py --search --save-best`` writes it; ``test.py --post-config`` reads it."""
    from dataclasses import replace

    from tgs.io import atomic_open

    record = replace(info, setting=setting) if isinstance(info, Record) else Record(setting, **(info or {}))
    with atomic_open(path, "w") as fh:
        json.dump(record.to_json(), fh, indent=2)
        fh.write("\n")


def load_setting(path) -> tuple[PostProcess, Record]:
    """(setting, the whole record) of a :func:`save_setting` file; a bad file is one UserError line naming it."""
    path = require_file(path, "--post-config ", "JSON file")
    where = f"--post-config {path}"

    def unique(pairs):
        keys = [k for k, _ in pairs]
        twice = [k for k in keys if keys.count(k) > 1]
        if twice:
            raise UserError(f"{where}: key {excerpt(twice[0])} is given twice")
        return dict(pairs)

    try:
        data = json.loads(read_config_text(path, "--post-config "), object_pairs_hook=unique)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{where}: not a JSON file ({exc})") from None
    record = Record.from_json(data, where)
    return record.setting, record


def resolve(config=None, given: dict | None = None) -> tuple[PostProcess, str]:
    """(setting, where it comes from): the ``config`` file's setting (:func:`load_setting`) or :data:`DEFAULTS`,
    with the fields in ``given`` (flags on the command line) replacing theirs."""
    base, source = DEFAULTS, "defaults"
    if config:
        base, info = load_setting(config)
        source = str(config) + (f", searched on {info.searched_on}" if info.searched_on else "")
    given = given or {}
    unknown = set(given) - set(base.to_dict())
    if unknown:
        raise ValueError(f"not post-processing fields: {sorted(unknown)}")
    if given and config:
        source += f"; {', '.join(k.replace('_', ' ') for k in given)} from the command line"
    return PostProcess(**{**base.to_dict(), **given}), source


def flat_images(images: np.ndarray) -> np.ndarray:
    """(N,) bool: images whose pixels all have the same value."""
    flat = np.asarray(images).reshape(len(images), -1)
    return flat.min(axis=1) == flat.max(axis=1)


def emptied(area: np.ndarray, image_probs: np.ndarray | None, flat: np.ndarray | None,
            params: PostProcess) -> np.ndarray:
    """(N,) bool: images whose prediction steps 2-4 replace by an empty mask, from the thresholded areas."""
    out = np.asarray(area) < params.min_area
    if params.gate is not None and image_probs is not None:
        img = np.asarray(image_probs, dtype=np.float32)
        out |= img < params.gate  # NaN compares False: never gated
    if params.flat and flat is not None:
        out |= np.asarray(flat, dtype=bool)
    return out


def apply(probs: np.ndarray, image_probs: np.ndarray | None = None, images: np.ndarray | None = None,
          params: PostProcess = DEFAULTS) -> np.ndarray:
    """Masks (N, H, W) bool from probabilities (N, H, W) (float in [0, 1], or (N, 1, H, W)).

    ``image_probs`` (N,) feed the gating, ``images`` (N, H, W) the flat-image rule; either may be None (that
    step is then skipped).
    """
    probs = np.asarray(probs)
    if probs.ndim == 4:
        probs = probs[:, 0]
    if probs.ndim != 3:
        raise ValueError(f"expected probabilities of shape (N, H, W), got {probs.shape}")
    n = len(probs)
    if image_probs is not None and len(image_probs) != n:
        raise ValueError(f"{n} probability maps but {len(image_probs)} image probabilities")
    if images is not None and len(images) != n:
        raise ValueError(f"{n} probability maps but {len(images)} images")
    masks = np.empty(probs.shape, dtype=bool)
    for first in range(0, n, _CHUNK):  # blocks of images: the whole set at once, in cache-sized pieces
        np.greater(probs[first:first + _CHUNK], params.threshold, out=masks[first:first + _CHUNK])
    area = np.count_nonzero(masks.reshape(n, -1), axis=1)
    drop = emptied(area, image_probs, flat_images(images) if images is not None else None, params)
    masks[drop] = False
    return masks
