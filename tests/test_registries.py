"""One shared test class per registry, run over every registered entry (a new entry is tested by being registered),
and the parsers and messages read the registries (no choice list is written twice)."""
from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pytest
import torch

import models
from cli.train import build_parser
from engine import config, jobs, optimizers, schedulers
from losses import LOSSES, build_loss
from models.encoders import ENCODERS
from tgs.errors import UserError
from tgs.inputs import INPUT_MODES, InputSpec
from tgs.mosaic import Mosaics
from tgs.mosaic_rules import MOSAIC_RULES, apply_rules
from tgs.registry import Registry

REGISTRIES = {"losses": LOSSES, "input modes": INPUT_MODES, "schedules": schedulers.SCHEDULES,
              "optimisers": optimizers.OPTIMIZERS, "mosaic rules": MOSAIC_RULES, "encoders": ENCODERS,
              "executors": jobs.EXECUTORS}


# -- the registry itself ----------------------------------------------------------------------------------------
def test_a_name_is_registered_once_and_an_unknown_one_is_one_line_listing_the_valid_names():
    r = Registry("colour")
    r.add("red", 1, help="warm")
    with pytest.raises(ValueError, match="registered twice"):
        r.add("red", 2)
    with pytest.raises(UserError) as err:
        r.get("rde")
    assert str(err.value) == "unknown colour 'rde' (did you mean 'red'?); valid colours: red"
    assert r.get("red").obj == 1 and r.describe() == ["red: warm"]


@pytest.mark.parametrize("name", REGISTRIES)
def test_every_entry_has_help(name):
    registry = REGISTRIES[name]
    assert len(registry) >= 2
    for entry in registry.entries():
        assert entry.help.strip(), f"{name}: {entry.name} has no help"


# -- the parsers read the registries ----------------------------------------------------------------------------
def _train_action(flag: str):
    return next(a for a in build_parser()._actions if flag in a.option_strings)


@pytest.mark.parametrize("flag, registry", [("--optim", optimizers.OPTIMIZERS),
                                            ("--lr-scheduler", schedulers.SCHEDULES),
                                            ("--input-mode", INPUT_MODES)])
def test_train_choices_are_the_registry(flag, registry):
    assert config.spec(flag[2:].replace("-", "_")).choices == registry.names()
    assert _train_action(flag).metavar == "{" + ",".join(registry.names()) + "}"


@pytest.mark.parametrize("registry", [LOSSES, optimizers.OPTIMIZERS, schedulers.SCHEDULES])
def test_every_declared_option_is_a_train_flag_with_its_default(registry):
    defaults = config.TrainConfig().to_dict()
    for entry in registry.entries():
        for d in entry.options:
            flag = "--" + d.name.replace("_", "-")
            assert _train_action(flag).help.startswith(d.option.help.split(":")[0]), flag
            assert defaults[d.name] == d.default
            # used only with the entries that declare it
            key, users = config.USED_ONLY_WITH[d.name]
            assert entry.name in users


def test_an_option_given_without_its_entry_is_noted():
    cfg = config.resolve({"loss": "bce", "focal_gamma": "3"})
    assert cfg.unused(["focal_gamma"]) == ["--focal-gamma is not used with --loss bce (only with the focal loss)"]
    assert config.resolve({"loss": "focal+bce", "focal_gamma": "3"}).unused(["focal_gamma"]) == []


# -- losses ---------------------------------------------------------------------------------------------------------
def _out(logits: torch.Tensor) -> dict:
    return {"logits": logits, "aux": [logits], "image_logit": logits.mean((1, 2, 3))}


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_prefers_the_truth_and_has_gradients(name):
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(4, 1, 16, 16, generator=g) < 0.4).float()
    y[0] = 0  # an empty image, as 39% of the real masks are
    right = (y * 2 - 1) * 6.0
    x = torch.zeros_like(y, requires_grad=True)
    crit = build_loss(name)
    good, bad = crit(_out(right), y).item(), crit(_out(-right), y).item()
    assert math.isfinite(good) and math.isfinite(bad) and good < bad
    crit(_out(x), y).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# -- input modes ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", INPUT_MODES.names())
def test_every_input_mode_round_trips_a_smooth_tile_and_keeps_masks_binary(name):
    entry = INPUT_MODES.get(name)
    spec = InputSpec(name, entry.default_size)
    r = torch.linspace(0, 1, 101)
    tile = (0.5 + 0.25 * torch.sin(3 * r)[:, None] * torch.cos(2 * r)[None, :])[None, None]
    x = spec.encode_images(tile)
    assert x.shape == (1, 1, spec.size, spec.size)
    back = spec.decode(x)
    assert back.shape == tile.shape and (back - tile).abs().max() < 0.01
    if entry.keeps_pixels:
        assert torch.equal(back, tile) and torch.equal(x[..., spec.centre()[0], spec.centre()[1]], tile)
    m = spec.encode_masks(torch.rand(2, 1, 101, 101) < 0.5)
    assert set(m.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("mode, size", [("pad", 100), ("resize_pad", 201)])
def test_a_padding_mode_refuses_a_size_below_what_it_pads(mode, size):
    with pytest.raises(UserError, match="cannot pad"):
        InputSpec(mode, size)


def test_an_unknown_input_mode_lists_the_registered_ones():
    with pytest.raises(UserError, match="valid input modes: pad, resize, resize_pad"):
        InputSpec("zoom", 128)


# -- schedules and optimisers ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", schedulers.SCHEDULES.names())
def test_every_schedule_stays_positive_and_at_most_the_base_rate(name):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sch = schedulers.build(name, opt, base_lr=0.1)
    rates = []
    for _ in range(60):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        schedulers.step(sch, 0.5)
    assert all(0 < r <= 0.1 + 1e-12 for r in rates)


@pytest.mark.parametrize("name", optimizers.OPTIMIZERS.names())
def test_every_optimiser_descends_a_quadratic(name):
    w = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    opt = optimizers.build(name, [w], lr=0.05, weight_decay=0.0)
    for _ in range(50):
        opt.zero_grad()
        (w ** 2).sum().backward()
        opt.step()
    assert (w ** 2).sum().item() < 13.0 / 4


# -- mosaic rules -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MOSAIC_RULES.names())
def test_every_mosaic_rule_leaves_known_tiles_alone_and_has_its_own_colour(name):
    layout = Mosaics(["k", "a", "b"], [0, 0, 0], [0, 1, 2], [0, 0, 0])
    wall = np.zeros((101, 101), bool)
    wall[:, 30:60] = True
    pred = np.zeros((3, 101, 101), bool)
    out = apply_rules(pred, ["k", "a", "b"], layout, ["k"], wall[None], [name])
    assert out.masks.shape == pred.shape and not out.masks[0].any()  # "k" is known: never changed
    colours = [e.colour for e in MOSAIC_RULES.entries()]
    assert len(set(colours)) == len(colours) and all(0 <= c <= 255 for c in MOSAIC_RULES.get(name).colour)


# -- encoders -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ENCODERS.names())
def test_every_named_encoder_resolves(name):
    entry = ENCODERS.get(name)
    if entry.scratch:
        enc = models.encoders.build_encoder(name, width=4)
        feats = enc(torch.zeros(1, 1, 64, 64))
        assert len(feats) == len(enc.out_channels) and [f.shape[1] for f in feats] == enc.out_channels
    else:
        import timm

        assert models.resolve_encoder(name) == entry.obj and timm.is_model(entry.obj)


# -- what an option changes, declared on the option ------------------------------------------------------------------
def test_the_reuse_and_resume_sets_come_from_the_declarations():
    assert set(config.NOT_REPEATED) == {"resume", "overwrite"}
    assert set(config.RUN_ONLY) == {"device", "threads", "dataload_workers_nums", "no_cache", "compile", "comment",
                                    "log_dir", "data_dir"}
    assert set(config.RESUMABLE_CHANGES) == set(config.RUN_ONLY) | {"max_epochs", "early_stopping", "val_batch_size",
                                                                   "amp", "channels_last", "pseudo_labels"}
    assert "learning_rate" not in config.RESUMABLE_CHANGES and "focal_gamma" not in config.RESUMABLE_CHANGES


def test_the_swa_options_that_change_nothing_come_from_the_declarations():
    """A fold's SWA model is made again when an SWA option that changes the average differs (amp, the batch, the
    fold), never for where or how it runs; the set is derived from the training options' declarations and the
    SWA fields' own."""
    from engine import swa
    from engine.ensemble.options import SWA_RUN_ONLY

    assert set(SWA_RUN_ONLY) == {"inputs", "output", "device", "threads", "decode_threads", "no_cache", "data_dir",
                                 "folds_file"}
    changing = {f.name for f in fields(swa.SwaOptions)} - set(SWA_RUN_ONLY)
    assert changing == {"data_fold", "drop_mask_threshold", "batch_size", "amp"}


# -- executors ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", jobs.EXECUTORS.names())
def test_every_executor_is_a_choice_of_ensemble_and_has_a_poll_interval(name):
    from cli.ensemble import build_parser as ensemble_parser

    action = next(a for a in ensemble_parser()._actions if "--executor" in a.option_strings)
    assert tuple(action.choices) == jobs.EXECUTORS.names()
    assert jobs.EXECUTORS.get(name).poll_s >= 0


def test_every_input_mode_has_an_ensemble_size_flag():
    from cli.ensemble import build_parser as ensemble_parser

    flags = {s for a in ensemble_parser()._actions for s in a.option_strings}
    assert {f"--{m.replace('_', '-')}-size" for m in INPUT_MODES.names()} <= flags
