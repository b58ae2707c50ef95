"""models/: factory, blocks, forward contract, pretrained weights. Tiny inputs and encoders (CPU, 2 cores)."""
from __future__ import annotations

import logging
import math

import pytest
import timm
import torch

import models
from models.blocks import SCSE, DecoderBlock, OCBlock, SelfAttention2d
from tgs.errors import UserError

SMALL = dict(center_channels=16, decoder_channels=8, fuse_channels=8, image_channels=8)




def tiny(encoder: str = "unet_nopool", **kw) -> models.SaltUNet:
    torch.manual_seed(0)
    opts = dict(encoder=encoder, input_upsample=1, encoder_width=4, **SMALL)
    opts.update(kw)
    return models.build_model(**opts)


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return models.build_model(encoder="resnet18", input_upsample=1, **SMALL).eval()


def _check_output(out: dict, n: int, h: int, w: int, levels: int) -> None:
    assert set(out) == {"logits", "aux", "image_logit"}
    assert out["logits"].shape == (n, 1, h, w)
    assert out["image_logit"].shape == (n,)
    assert len(out["aux"]) == levels
    for aux in out["aux"]:
        assert aux.shape == (n, 1, h, w)
    for t in [out["logits"], out["image_logit"], *out["aux"]]:
        assert t.dtype == torch.float32 and torch.isfinite(t).all()


# -- forward contract ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoder,upsample,size", [
    ("resnet18", 1, (64, 64)),
    ("resnet18", 2, (32, 64)),
    ("unet", 1, (64, 32)),
    ("unet", 2, (32, 32)),
    ("unet_nopool", 1, (64, 64)),
    ("unet_nopool", 2, (32, 32)),
])
def test_output_keys_and_shapes(encoder, upsample, size):
    model = tiny(encoder, input_upsample=upsample)
    levels = len(model.encoder.out_channels)
    x = torch.rand(2, 1, *size)
    for train in (True, False):
        model.train(train)
        with torch.no_grad():
            _check_output(model(x), 2, *size, levels)


def test_backward_reaches_every_parameter():
    model = tiny("unet", scse=True).train()
    out = model(torch.rand(2, 1, 32, 32))
    loss = out["logits"].mean() + sum(a.mean() for a in out["aux"]) + out["image_logit"].mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_encoder_describes_itself(resnet18):
    enc = resnet18.encoder
    assert enc.out_channels == [64, 64, 128, 256, 512]
    assert enc.reductions == [2, 4, 8, 16, 32]
    assert [f["num_chs"] for f in enc.feature_info] == enc.out_channels
    assert resnet18.size_divisor == 32
    assert len(resnet18.decoder) == 5 and resnet18.decoder_channels == [8] * 5
    scratch = tiny("unet", encoder_width=3)
    assert scratch.encoder.out_channels == [3, 6, 12, 24, 48, 48]
    assert scratch.encoder.reductions == [1, 2, 4, 8, 16, 32]
    feats = scratch.encoder(torch.rand(1, 1, 64, 64))
    assert [f.shape[1] for f in feats] == scratch.encoder.out_channels
    assert [64 // f.shape[-1] for f in feats] == scratch.encoder.reductions


def test_nopool_encoder_downsamples_by_strided_conv():
    pool = tiny("unet").encoder
    nopool = tiny("unet_nopool").encoder
    assert any(isinstance(m, torch.nn.MaxPool2d) for m in pool.modules())
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in nopool.modules())
    assert any(isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2) for m in nopool.modules())


def test_decoder_channels_per_level():
    model = tiny("unet_nopool", decoder_channels=[12, 10, 8, 8, 6, 4])
    assert [b.conv[0].out_channels for b in model.decoder] == [12, 10, 8, 8, 6, 4]
    _check_output(model(torch.rand(2, 1, 32, 32)), 2, 32, 32, 6)
    with pytest.raises(UserError, match="decoder_channels has 2 widths.*6 feature levels"):
        tiny("unet_nopool", decoder_channels=[8, 8])


@pytest.mark.parametrize("skip", ["concat", "add", "max", "none"])
def test_skip_fusion_modes(skip):
    torch.manual_seed(0)
    block = DecoderBlock(6, 4, 5, skip=skip).eval()
    x, s1, s2 = torch.randn(2, 6, 8, 8), torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    fused = block.fuse(x, s1)
    if skip == "concat":
        assert torch.equal(fused, torch.cat([x, s1], 1))
        assert block.conv[0].in_channels == 10
    elif skip == "add":
        assert torch.allclose(fused, x + block.skip_proj(s1))
    elif skip == "max":
        assert torch.allclose(fused, torch.maximum(x, block.skip_proj(s1)))
    else:
        assert fused is x
    with torch.no_grad():
        y1, y2 = block(x, s1), block(x, s2)
    assert y1.shape == (2, 5, 16, 16)  # ConvTranspose2d(4, 2, 1) doubles the side
    assert torch.equal(y1, y2) == (skip == "none")
    model = tiny("unet_nopool", skip=skip)
    _check_output(model(torch.rand(2, 1, 32, 32)), 2, 32, 32, 6)


@pytest.mark.parametrize("oc_center,oc_decoder", [(True, True), (True, False), (False, True), (False, False)])
def test_oc_switches(oc_center, oc_decoder):
    model = tiny("unet_nopool", oc_center=oc_center, oc_decoder=oc_decoder)
    assert isinstance(model.context[1], OCBlock) == oc_center
    assert all(isinstance(b.oc, OCBlock) == oc_decoder for b in model.decoder)
    n_oc = sum(isinstance(m, OCBlock) for m in model.modules())
    assert n_oc == oc_center + oc_decoder * len(model.decoder)
    _check_output(model(torch.rand(2, 1, 32, 32)), 2, 32, 32, 6)


def test_scse_block():
    model = tiny("unet", scse=True)
    assert all(isinstance(b.scse, SCSE) for b in model.decoder)
    assert not any(isinstance(m, SCSE) for m in tiny("unet").modules())
    torch.manual_seed(1)
    se = SCSE(32).eval()
    x = torch.randn(2, 32, 5, 5)
    expected = x * se.cse(x) + x * torch.sigmoid(se.sse[0](x))
    assert se.cse(x).shape == (2, 32, 1, 1)
    assert torch.allclose(se(x), expected)


def test_oc_block_is_identity_fusion_at_init():
    torch.manual_seed(0)
    block = OCBlock(16).eval()
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        assert torch.count_nonzero(block.attention(x)) == 0
        expected = block.fuse(torch.cat([torch.zeros_like(x), x], 1))
        assert torch.equal(block(x), expected)
        torch.nn.init.normal_(block.attention.proj.weight)  # once trained, the context contributes
        assert not torch.allclose(block(x), expected)


def test_attention_matches_handwritten_softmax():
    torch.manual_seed(0)
    attn = SelfAttention2d(12, 6, 5, 12).eval()
    torch.nn.init.normal_(attn.proj.weight)
    torch.nn.init.normal_(attn.proj.bias)
    x = torch.randn(2, 12, 4, 7)
    with torch.no_grad():
        q, k, v = attn.qkv(x)
        assert q.shape == (2, 1, 28, 6) and v.shape == (2, 1, 28, 5)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(6), dim=-1)
        context = (weights @ v).squeeze(1).transpose(1, 2).reshape(2, 5, 4, 7)
        expected = attn.proj(context)
        assert torch.allclose(attn(x), expected, atol=1e-5)


def test_size_not_multiple_of_32_names_nearest_sizes(resnet18):
    with pytest.raises(UserError, match=r"height 100 is not a multiple of 32.*use 96 or 128"):
        resnet18(torch.rand(1, 1, 100, 128))
    with pytest.raises(UserError, match=r"width 20 is not a multiple of 32.*use 32$"):
        resnet18(torch.rand(1, 1, 64, 20))
    # the x2 up-sampling does not change the rule
    with pytest.raises(UserError, match="101 is not a multiple of 32"):
        tiny("unet_nopool", input_upsample=2)(torch.rand(1, 1, 101, 101))


def test_bad_input_is_refused(resnet18):
    with pytest.raises(UserError, match="float"):
        resnet18(torch.zeros(1, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(UserError, match="channels"):
        resnet18(torch.rand(1, 2, 32, 32))
    with pytest.raises(UserError, match=r"\(N, 1, H, W\)"):
        resnet18(torch.rand(1, 32, 32))


def test_unknown_encoder_lists_close_matches():
    with pytest.raises(UserError) as err:
        models.build_model(encoder="resnet3")
    msg = str(err.value)
    assert "'resnet3'" in msg and "resnet34" in msg and "\n" not in msg
    with pytest.raises(UserError, match="senet154"):
        models.build_model(encoder="senet155")
    with pytest.raises(UserError, match="unet_nopool"):
        models.build_model(encoder="unet_nopol")


def test_aliases_and_list_encoders():
    assert models.resolve_encoder("senet154") == "legacy_senet154"
    assert models.resolve_encoder("se_resnext50_32x4d") == "legacy_seresnext50_32x4d"
    assert models.resolve_encoder("resnet34") == "resnet34"
    assert models.resolve_encoder("unet") is None
    names = models.list_encoders()
    assert {"unet", "unet_nopool", "senet154", "resnet34"} <= set(names)
    assert models.list_encoders("unet*") == ["unet", "unet_nopool"]


def test_config_round_trip_and_errors():
    cfg = models.ModelConfig(encoder="resnet34", decoder_channels=(32, 32, 16, 16, 8), skip="max")
    d = cfg.to_dict()
    assert d["decoder_channels"] == [32, 32, 16, 16, 8]
    assert models.ModelConfig.from_dict(d) == cfg
    recipe = models.ModelConfig()
    assert (recipe.encoder, recipe.input_upsample, recipe.oc_center, recipe.oc_decoder) == ("senet154", 2, True, True)
    with pytest.raises(UserError, match="unknown model option 'decoder_chanels'.*decoder_channels"):
        models.ModelConfig.from_dict({"decoder_chanels": 3})
    with pytest.raises(UserError, match="skip fusion 'sum'"):
        models.ModelConfig(skip="sum")
    with pytest.raises(UserError, match="dropout"):
        models.ModelConfig(dropout=1.5)


def test_build_model_accepts_config_dict_and_kwargs():
    cfg = models.ModelConfig(encoder="unet", encoder_width=2, input_upsample=1, **SMALL)
    a = models.build_model(cfg)
    assert a.config == cfg and a.config is not cfg
    b = models.build_model(cfg.to_dict(), skip="add")
    assert b.config.skip == "add" and cfg.skip == "concat"


# -- normalisation, input handling, numerics -------------------------------------------------------------------
def test_normalisation_buffers(resnet18):
    sd = resnet18.state_dict()
    assert torch.allclose(sd["mean"].flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert torch.allclose(sd["std"].flatten(), torch.tensor([0.229, 0.224, 0.225]))
    scratch = tiny("unet").state_dict()
    assert scratch["mean"].flatten().tolist() == [0.5] and scratch["std"].flatten().tolist() == [0.25]
    x = torch.rand(1, 1, 4, 4)
    expected = (x.expand(-1, 3, -1, -1) - sd["mean"]) / sd["std"]
    assert torch.allclose(resnet18.normalise(x), expected)


def test_input_not_mutated_and_grey_equals_rgb(resnet18):
    x = torch.rand(2, 1, 32, 64)
    keep = x.clone()
    with torch.no_grad():
        grey = resnet18(x)
        rgb = resnet18(x.repeat(1, 3, 1, 1))
    assert torch.equal(x, keep)
    assert torch.allclose(grey["logits"], rgb["logits"], atol=1e-6)
    scratch = tiny("unet").eval()
    with torch.no_grad():
        assert torch.allclose(scratch(x)["logits"], scratch(x.repeat(1, 3, 1, 1))["logits"], atol=1e-6)
    assert torch.equal(x, keep)


def test_bf16_autocast_forward_is_finite(resnet18):
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        ref = resnet18(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = resnet18(x)
    _check_output(out, 2, 32, 32, 5)
    assert torch.allclose(out["logits"], ref["logits"], atol=0.1)


def test_bf16_autocast_backward_tiny():
    model = tiny("unet_nopool", scse=True, skip="add").train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(2, 1, 32, 32))
    out["logits"].mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_channels_last_equals_contiguous():
    model = tiny("resnet18", input_upsample=2, scse=True).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    assert torch.allclose(out["logits"], ref["logits"], atol=1e-5)
    assert torch.allclose(out["image_logit"], ref["image_logit"], atol=1e-5)
    for a, b in zip(out["aux"], ref["aux"]):
        assert torch.allclose(a, b, atol=1e-5)


def test_upsampled_model_outputs_at_input_resolution():
    model = tiny("unet_nopool", input_upsample=2).eval()
    feats = []
    hook = model.encoder.register_forward_hook(lambda m, i, o: feats.append(o))
    with torch.no_grad():
        out = model(torch.rand(1, 1, 32, 64))
    hook.remove()
    assert feats[0][0].shape[-2:] == (64, 128)  # the encoder saw the x2 image
    assert out["logits"].shape[-2:] == (32, 64)


# -- pretrained weights ----------------------------------------------------------------------------------------
def _encoder_state(model):
    return model.encoder.model.state_dict()


def test_pretrained_timm_file_is_loaded(tmp_path, caplog):
    torch.manual_seed(1)
    full = timm.create_model("resnet18")
    sd = full.state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(sd, path)
    with caplog.at_level(logging.WARNING):
        model = models.build_model(encoder="resnet18", pretrained=str(path), input_upsample=1, **SMALL)
    enc = _encoder_state(model)
    assert set(enc) == set(sd) - {"fc.weight", "fc.bias"}
    assert all(torch.equal(enc[k], sd[k]) for k in enc)
    assert not caplog.records  # classifier keys are ignored silently
    fresh = models.build_model(encoder="resnet18", input_upsample=1, **SMALL)
    assert not torch.equal(_encoder_state(fresh)["conv1.weight"], sd["conv1.weight"])


def test_pretrained_cadene_format_wrapped(tmp_path, caplog):
    torch.manual_seed(2)
    full = timm.create_model("legacy_seresnet18")  # Cadene's se_resnet keys == timm legacy_* keys
    sd = full.state_dict()
    assert "last_linear.weight" in sd
    for wrap in ["state_dict", "model"]:
        path = tmp_path / f"se_resnet18_{wrap}.pth"
        torch.save({wrap: {"module." + k: v for k, v in sd.items()}, "epoch": 3}, path)
        with caplog.at_level(logging.WARNING):
            model = models.build_model(encoder="se_resnet18", pretrained=path, input_upsample=1, **SMALL)
        enc = _encoder_state(model)
        assert set(enc) == set(sd) - {"last_linear.weight", "last_linear.bias"}
        assert all(torch.equal(enc[k], sd[k]) for k in enc)
    assert not caplog.records


def test_pretrained_missing_and_unexpected_keys_are_reported(tmp_path, caplog):
    sd = timm.create_model("resnet18").state_dict()
    del sd["layer4.1.bn2.weight"]
    sd["extra_branch.weight"] = torch.zeros(3)
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with caplog.at_level(logging.WARNING, logger="models.pretrained"):
        model = models.build_model(encoder="resnet18", pretrained=str(path), input_upsample=1, **SMALL)
    text = caplog.text
    assert "layer4.1.bn2.weight" in text and "extra_branch.weight" in text and str(path) in text
    assert torch.equal(_encoder_state(model)["conv1.weight"], sd["conv1.weight"])


def test_pretrained_shape_mismatch_is_an_error(tmp_path):
    sd = timm.create_model("resnet18").state_dict()
    sd["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(UserError, match=r"'layer1.0.conv1.weight' has shape \(64, 64, 5, 5\).*\(64, 64, 3, 3\)"):
        models.build_model(encoder="resnet18", pretrained=str(path), input_upsample=1, **SMALL)


def test_pretrained_file_of_other_architecture_and_missing_file(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(2)}, path)
    with pytest.raises(UserError, match="none of its 1 tensors match"):
        models.build_model(encoder="resnet18", pretrained=str(path), input_upsample=1, **SMALL)
    with pytest.raises(UserError, match="not found: .*nope.pth"):
        models.build_model(encoder="resnet18", pretrained=str(tmp_path / "nope.pth"), input_upsample=1, **SMALL)


def test_pretrained_into_scratch_encoder(tmp_path):
    src = tiny("unet")
    path = tmp_path / "unet_encoder.pth"
    torch.save(src.encoder.state_dict(), path)
    torch.manual_seed(5)
    model = tiny("unet", pretrained=str(path))
    assert all(torch.equal(a, b) for a, b in zip(model.encoder.state_dict().values(),
                                                   src.encoder.state_dict().values()))


def test_pretrained_imagenet_offline_explains_local_file(monkeypatch):
    real = timm.create_model

    def offline(name, *args, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(UserError) as err:
        models.build_model(encoder="resnet18", pretrained="imagenet", input_upsample=1, **SMALL)
    msg = str(err.value)
    assert "resnet18" in msg and "pretrained=/path/to/weights.pth" in msg and "\n" not in msg
    with pytest.raises(UserError, match="no ImageNet weights"):
        tiny("unet", pretrained="imagenet")


# -- heavy: opt-in ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_recipe_senet154_forward_and_cadene_keys():
    with torch.device("meta"):
        full = set(timm.create_model("legacy_senet154").state_dict())
    model = models.build_model(models.ModelConfig()).eval()
    enc = set(model.encoder.model.state_dict())
    assert enc == full - {"last_linear.weight", "last_linear.bias"}
    assert model.encoder.out_channels == [128, 256, 512, 1024, 2048]
    with torch.no_grad():
        _check_output(model(torch.rand(1, 1, 64, 64)), 1, 64, 64, 5)


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["efficientnet_b0", "vgg11_bn", "seresnext26d_32x4d"])
def test_other_timm_encoders(encoder, tmp_path, caplog):
    full = timm.create_model(encoder)
    path = tmp_path / "w.pth"
    torch.save(full.state_dict(), path)
    with caplog.at_level(logging.WARNING):
        model = models.build_model(encoder=encoder, pretrained=str(path), input_upsample=1, **SMALL).eval()
    assert not caplog.records  # vgg's flattened keys (features.0 -> features_0) are mapped
    with torch.no_grad():
        _check_output(model(torch.rand(1, 1, 64, 64)), 1, 64, 64, len(model.encoder.out_channels))
