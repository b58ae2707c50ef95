"""models/checkpoint.py: one self-contained, weights-only, atomically written checkpoint format."""
from __future__ import annotations

import ast
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from tgs.errors import UserError
from tgs.inputs import InputSpec

SMALL = dict(input_upsample=1, encoder_width=4, center_channels=16, decoder_channels=8, fuse_channels=8,
             image_channels=8)
SPEC = InputSpec(mode="resize", size=64, border="replicate")




def tiny(**kw) -> models.SaltUNet:
    torch.manual_seed(0)
    model = models.build_model(**{"encoder": "unet_nopool", **SMALL, **kw})
    model.train()
    with torch.no_grad():  # move the BN running stats away from their init
        model(torch.rand(2, 1, 32, 32))
    return model.eval()


class Evil:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _outputs_equal(a: dict, b: dict) -> bool:
    return (torch.equal(a["logits"], b["logits"]) and torch.equal(a["image_logit"], b["image_logit"])
            and all(torch.equal(x, y) for x, y in zip(a["aux"], b["aux"])))


def test_round_trip_rebuilds_identical_model(tmp_path):
    model = tiny(skip="add", scse=True, oc_decoder=False)
    path = models.save_checkpoint(tmp_path / "fold0.pt", model, SPEC,
                                  meta={"fold": 0, "epoch": 7, "metrics": {"map": np.float64(0.85)}})
    loaded = models.load(path)
    assert isinstance(loaded, models.Loaded)
    assert not loaded.model.training
    assert loaded.input_spec == SPEC
    assert loaded.config == model.config
    assert loaded.meta["fold"] == 0 and loaded.meta["epoch"] == 7
    assert loaded.meta["metrics"]["map"] == 0.85 and type(loaded.meta["metrics"]["map"]) is float
    assert loaded.meta["versions"]["torch"] == torch.__version__ and "timm" in loaded.meta["versions"]
    assert loaded.extra is None
    x = torch.rand(2, 1, 32, 64)
    with torch.no_grad():
        assert _outputs_equal(model(x), loaded.model(x))
    sd, sd2 = model.state_dict(), loaded.model.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)


def test_checkpoint_is_plain_and_self_contained(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "encoder.pth"
    torch.save(models.build_model(encoder="unet", **SMALL).encoder.state_dict(), weights)
    model = models.build_model(encoder="unet", pretrained=str(weights), **SMALL).eval()
    path = models.save_checkpoint(tmp_path / "ck.pt", model, SPEC.to_dict(), meta={"fold": 1})
    weights.unlink()  # rebuilding must not need the pretrained file
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == models.FORMAT and raw["format_version"] == models.FORMAT_VERSION
    assert raw["model_config"]["pretrained"] is None and raw["model_config"]["encoder"] == "unet"
    assert raw["input_spec"] == SPEC.to_dict()
    assert "mean" in raw["state_dict"] and "std" in raw["state_dict"]
    loaded = models.load(path)
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert _outputs_equal(model(x), loaded.model(x))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, imported by torch.compile
@pytest.mark.parametrize("wrap", ["compile", "dataparallel"])
def test_wrapper_prefixes_are_stripped(tmp_path, wrap):
    model = tiny()
    wrapped = torch.compile(model) if wrap == "compile" else torch.nn.DataParallel(model)
    prefix = "_orig_mod." if wrap == "compile" else "module."
    assert all(k.startswith(prefix) for k in wrapped.state_dict())
    path = models.save_checkpoint(tmp_path / "w.pt", wrapped, SPEC)
    raw = models.read_checkpoint(path)
    assert raw["state_dict"].keys() == model.state_dict().keys()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert _outputs_equal(model(x), models.load(path).model(x))


def test_extra_resume_state_round_trip(tmp_path):
    model = tiny().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    model(torch.rand(2, 1, 32, 32))["logits"].mean().backward()
    opt.step()
    sched.step()
    extra = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": 123,
             "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}}
    path = models.save_checkpoint(tmp_path / "last.pt", model, SPEC, meta={"epoch": 1}, extra=extra)
    raw = models.read_checkpoint(path)
    got = raw["extra"]
    assert got["step"] == 123
    assert torch.equal(got["rng"]["torch"], torch.get_rng_state())
    assert torch.equal(got["rng"]["numpy"][1], torch.from_numpy(np.random.get_state()[1]))
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt2.load_state_dict(got["optimizer"])
    state, state2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert state.keys() == state2.keys() and torch.equal(state[0]["exp_avg"], state2[0]["exp_avg"])
    assert models.load(path).extra["scheduler"]["last_epoch"] == 1


def test_unstorable_meta_fails_at_save_and_leaves_nothing(tmp_path):
    model = tiny()
    path = tmp_path / "ck.pt"
    models.save_checkpoint(path, model, SPEC, meta={"epoch": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError, match=r"meta\['bad'\]"):
        models.save_checkpoint(path, model, SPEC, meta={"bad": object()})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


def test_atomic_write_leaves_no_temp_file(tmp_path, monkeypatch):
    model = tiny()
    out = tmp_path / "sub" / "best.pt"
    models.save_checkpoint(out, model, SPEC, meta={"epoch": 1})
    models.save_checkpoint(out, model, SPEC, meta={"epoch": 2})  # overwrite in place
    assert [p.name for p in out.parent.iterdir()] == ["best.pt"]
    assert models.read_checkpoint(out)["meta"]["epoch"] == 2

    def crash(obj, f, *a, **k):  # a kill in the middle of writing
        Path(f).write_bytes(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        models.save_checkpoint(out, model, SPEC, meta={"epoch": 3})
    assert [p.name for p in out.parent.iterdir()] == ["best.pt"]
    monkeypatch.undo()
    assert models.read_checkpoint(out)["meta"]["epoch"] == 2


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_without_running(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"format": models.FORMAT, "state_dict": {"x": Evil(marker)}}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(payload, fh)
    for reader in (models.load, models.read_checkpoint):
        with pytest.raises(UserError) as err:
            reader(path)
        msg = str(err.value)
        assert str(path) in msg and "\n" not in msg and "refusing" in msg
    with pytest.raises(UserError, match="refusing pretrained weights"):
        models.build_model(encoder="unet", pretrained=str(path), **SMALL)
    assert not marker.exists()
    if how == "torch.save":
        assert "would run code" in msg and re.search(r"(posix|os|nt)\.system", msg)


def test_non_checkpoint_files_are_refused(tmp_path):
    cases = {
        "notes.txt": lambda p: p.write_text("hello, not a checkpoint\n"),
        "empty.pt": lambda p: p.write_bytes(b""),
        "state_dict.pt": lambda p: torch.save({"conv.weight": torch.zeros(2)}, p),
        "list.pt": lambda p: torch.save([1, 2, 3], p),
        "other_dict.pt": lambda p: torch.save({"epoch": 3, "model": {"w": torch.zeros(1)}}, p),
    }
    expected = {"notes.txt": "not a torch file", "empty.pt": "empty", "state_dict.pt": "bare state dict",
                "list.pt": "not a tgs-salt checkpoint", "other_dict.pt": "not a tgs-salt checkpoint"}
    for name, make in cases.items():
        path = tmp_path / name
        make(path)
        with pytest.raises(UserError) as err:
            models.load(path)
        msg = str(err.value)
        assert str(path) in msg and expected[name] in msg and "\n" not in msg, (name, msg)
    with pytest.raises(UserError, match="checkpoint not found"):
        models.load(tmp_path / "missing.pt")
    with pytest.raises(UserError, match="is not a file"):
        models.load(tmp_path)


def test_truncated_and_corrupt_files_are_refused(tmp_path):
    good = models.save_checkpoint(tmp_path / "good.pt", tiny(), SPEC)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(data[:64] + bytes(256) + data[320:])
    for path in (truncated, corrupt):
        with pytest.raises(UserError) as err:
            models.load(path)
        msg = str(err.value)
        assert str(path) in msg and "\n" not in msg
        assert re.search(r"truncated or corrupt|or it is corrupt", msg)
    assert "truncated or corrupt" in _error(truncated)


def _error(path) -> str:
    with pytest.raises(UserError) as err:
        models.read_checkpoint(path)
    return str(err.value)


def test_damaged_or_future_checkpoints_are_refused(tmp_path):
    path = models.save_checkpoint(tmp_path / "ck.pt", tiny(), SPEC)
    raw = torch.load(path, weights_only=True)
    future = dict(raw, format_version=models.FORMAT_VERSION + 1)
    torch.save(future, tmp_path / "future.pt")
    assert "format_version" in _error(tmp_path / "future.pt")
    no_spec = {k: v for k, v in raw.items() if k != "input_spec"}
    torch.save(no_spec, tmp_path / "nospec.pt")
    assert "'input_spec' is missing" in _error(tmp_path / "nospec.pt")
    wrong = dict(raw, state_dict={**raw["state_dict"], "decoder.0.conv.0.weight": torch.zeros(3, 3)})
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(UserError, match=r"wrong.pt does not fit its model config.*decoder.0.conv.0.weight"):
        models.load(tmp_path / "wrong.pt")
    bad_cfg = dict(raw, model_config={**raw["model_config"], "encoder": "resnet_nope"})
    torch.save(bad_cfg, tmp_path / "badcfg.pt")
    with pytest.raises(UserError, match=r"badcfg.pt: cannot rebuild its model: unknown encoder 'resnet_nope'"):
        models.load(tmp_path / "badcfg.pt")


def _torch_loads(tree: ast.AST):
    """Every call of ``torch.load``, or of ``load`` imported from torch, found by the syntax tree."""
    aliases = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "torch"
               for a in n.names if a.name == "load"}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if (isinstance(f, ast.Attribute) and f.attr == "load" and isinstance(f.value, ast.Name)
                and f.value.id == "torch") or (isinstance(f, ast.Name) and f.id in aliases):
            yield node


def _weights_only(call: ast.Call) -> bool:
    return any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
               for k in call.keywords)


def test_every_torch_load_of_the_project_is_weights_only():
    """Every module of the project, read by its syntax tree (a docstring that mentions torch.load is no call)."""
    root = Path(models.__file__).parent.parent
    folders = ("tgs", "datasets", "models", "losses", "engine", "cli", "bench")
    files = [f for d in folders for f in (root / d).rglob("*.py")] + list(root.glob("*.py"))
    calls = [(f, c) for f in files for c in _torch_loads(ast.parse(f.read_text(), str(f)))]
    assert calls, "the project reads torch files somewhere (models/safeload.py)"
    bad = [f"{f.relative_to(root)}:{c.lineno}" for f, c in calls if not _weights_only(c)]
    assert not bad, f"torch.load without weights_only=True: {bad}"


def test_the_torch_load_check_sees_what_a_regex_would_miss():
    source = ("from torch import load as L\nimport torch\nL(p)\ntorch.load(p, weights_only=False)\n"
              "torch.load(p, weights_only=True)\n'torch.load(x)'\n")
    assert [_weights_only(c) for c in _torch_loads(ast.parse(source))] == [False, False, True]
