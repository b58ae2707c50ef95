"""Tests of losses/: the batched Lovasz against a plain per-image loop of Berman's reference, gradients, the
symmetric and ignore-empty variants, BCE, Dice, combinations, autocast, the deep criterion, a toy fit, errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import losses
from losses import (
    DeepSupervisionLoss,
    WeightedSum,
    bce_loss,
    build_loss,
    lovasz_grad,
    lovasz_hinge,
    lovasz_hinge_per_image,
    soft_dice_loss,
    symmetric_lovasz,
)
from tgs.errors import UserError


# ---------------------------------------------------------------------------------------------------------------
# Reference: Berman's lovasz_hinge_flat (github.com/bermanmaxim/LovaszSoftmax), elu+1 instead of relu, one image
# at a time in a Python loop.
# ---------------------------------------------------------------------------------------------------------------
def ref_lovasz_grad(gt_sorted):
    p = len(gt_sorted)
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if p > 1:  # cover 1-pixel case
        jaccard[1:p] = jaccard[1:p] - jaccard[0:-1]
    return jaccard


def ref_lovasz_hinge_flat(logits, labels, activation="elu"):
    signs = 2.0 * labels - 1.0
    errors = 1.0 - logits * signs
    errors_sorted, perm = torch.sort(errors, dim=0, descending=True)
    gt_sorted = labels[perm]
    grad = ref_lovasz_grad(gt_sorted)
    act = F.elu(errors_sorted) + 1 if activation == "elu" else F.relu(errors_sorted)
    return torch.dot(act, grad)


def ref_per_image(logits, labels, activation="elu"):
    labels = labels.to(logits.dtype)
    return torch.stack(
        [ref_lovasz_hinge_flat(x.reshape(-1), y.reshape(-1), activation) for x, y in zip(logits, labels)]
    )


def ref_lovasz(logits, labels, activation="elu"):
    return ref_per_image(logits, labels, activation).mean()


def ref_symmetric(logits, labels):
    labels = labels.to(logits.dtype)
    return 0.5 * (ref_lovasz(logits, labels) + ref_lovasz(-logits, 1 - labels))


def ref_symmetric_ignore_empty(logits, labels):
    labels = labels.to(logits.dtype)
    keep = [i for i in range(len(labels)) if labels[i].sum() > 0]
    if not keep:
        return logits.sum() * 0.0
    return ref_symmetric(logits[keep], labels[keep])


def batch(n=8, h=13, w=11, seed=0, dtype=torch.float32):
    """Random logits and masks: image 0 empty, image 1 full, the others random blobs of various densities."""
    g = torch.Generator().manual_seed(seed)
    x = (2.0 * torch.randn(n, 1, h, w, generator=g)).to(dtype)
    y = torch.zeros(n, 1, h, w, dtype=dtype)
    y[1] = 1.0
    for i in range(2, n):
        y[i] = (torch.rand(1, h, w, generator=g) < (i / n)).to(dtype)
    return x, y


def min_gap(errors):
    """Smallest distance between two errors of the same image (ties make the gradient depend on the sort)."""
    s = errors.reshape(errors.shape[0], -1).sort(1).values
    return s.diff(dim=1).min().item()


# ---------------------------------------------------------------------------------------------------------------
# Lovasz hinge
# ---------------------------------------------------------------------------------------------------------------
def test_lovasz_grad_matches_reference_per_row():
    g = torch.Generator().manual_seed(1)
    gt = (torch.rand(5, 40, generator=g) < 0.4).float()
    gt[0] = 0.0
    gt[1] = 1.0
    got = lovasz_grad(gt)
    want = torch.stack([ref_lovasz_grad(row.clone()) for row in gt])
    torch.testing.assert_close(got, want)
    sym = lovasz_grad(gt, symmetric=True)
    want_sym = torch.stack([0.5 * (ref_lovasz_grad(r.clone()) + ref_lovasz_grad(1 - r)) for r in gt])
    torch.testing.assert_close(sym, want_sym)


@pytest.mark.parametrize("activation", ["elu", "relu"])
def test_lovasz_matches_per_image_reference_value_and_grad(activation):
    x, y = batch(n=8, h=13, w=11, seed=2)
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    got = lovasz_hinge(x1, y, activation=activation)
    want = ref_lovasz(x2, y, activation)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    got.backward()
    want.backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-7)
    # per image, too (so a wrong per-image value cannot hide in the mean)
    torch.testing.assert_close(lovasz_hinge_per_image(x, y, activation=activation), ref_per_image(x, y, activation))


@pytest.mark.parametrize("symmetric", [False, True])
def test_sort_backends_agree(symmetric):
    x, y = batch(n=6, h=17, w=15, seed=22)
    assert min_gap(1 - x * (2 * y - 1)) > 0  # no ties: both backends must give the same permutation
    results = {}
    for backend in ("torch", "numpy", "auto"):
        xb = x.clone().requires_grad_()
        loss = lovasz_hinge(xb, y, symmetric=symmetric, sort_backend=backend)
        loss.backward()
        results[backend] = (loss.detach(), xb.grad)
    for backend in ("numpy", "auto"):
        torch.testing.assert_close(results[backend], results["torch"])
    errors = torch.randn(4, 50, dtype=torch.float64)
    for backend in ("torch", "numpy"):
        perm = losses.argsort_descending(errors, backend)
        assert perm.dtype == torch.int64
        assert torch.all(errors.gather(1, perm).diff(dim=1) <= 0)
        assert torch.equal(perm.sort(1).values, torch.arange(50).expand(4, 50))


def test_half_precision_sort_and_functorch_grad():
    v = torch.randn(3, 40).bfloat16()
    for backend in ("numpy", "auto", "torch"):
        assert torch.all(v.gather(1, losses.argsort_descending(v, backend)).diff(dim=1) <= 0)
    x, y = batch(n=4, h=6, w=7, seed=23)
    xg = x.clone().requires_grad_()
    lovasz_hinge(xg, y, symmetric=True).backward()
    torch.testing.assert_close(torch.func.grad(lambda t: lovasz_hinge(t, y, symmetric=True))(x), xg.grad)


def test_sort_backend_errors():
    with pytest.raises(ValueError, match="sort backend"):
        losses.argsort_descending(torch.zeros(2, 3), "radix")
    with pytest.raises(ValueError, match="CPU"):
        losses.argsort_descending(torch.zeros(2, 3, device="meta"), "numpy")
    assert losses.argsort_descending(torch.zeros(2, 3, device="meta")).device.type == "meta"  # auto -> torch


def test_lovasz_on_central_101_crop_of_128_batch():
    x, y = batch(n=4, h=128, w=128, seed=3)
    xc, yc = x[..., 13:114, 13:114], y[..., 13:114, 13:114]  # non-contiguous views
    torch.testing.assert_close(lovasz_hinge(xc, yc), ref_lovasz(xc, yc), rtol=1e-5, atol=1e-6)


def test_plain_lovasz_empty_truth_is_elu_of_largest_error_plus_one():
    # Berman's behaviour: with no positive pixel, delta = (1, 0, ..., 0): only the largest error counts.
    x = torch.tensor([[[[0.3, -2.0], [1.5, 0.1]]]])
    y = torch.zeros_like(x)
    # errors = 1 + x, the largest is 2.5 -> elu(2.5) + 1 = 3.5
    assert lovasz_hinge(x, y).item() == pytest.approx(3.5)
    x2 = torch.tensor([[[[-3.0, -2.0], [-4.0, -5.0]]]])  # largest error 1 - 2 = -1 -> elu(-1) + 1 = exp(-1)
    assert lovasz_hinge(x2, y).item() == pytest.approx(math.exp(-1.0))


def test_lovasz_value_with_ties_matches_reference():
    # Zero logits: every error is 1, a full tie; the value does not depend on the tie order: f(1) * J_P = 2.
    x = torch.zeros(3, 1, 5, 5)
    y = torch.zeros(3, 1, 5, 5)
    y[1, 0, :2] = 1
    y[2] = 1
    assert lovasz_hinge(x, y).item() == pytest.approx(2.0)
    torch.testing.assert_close(lovasz_hinge(x, y), ref_lovasz(x, y))
    # partial ties: logits rounded to a coarse grid
    xr, yr = batch(n=6, h=9, w=9, seed=4)
    xr = (xr * 2).round() / 2
    torch.testing.assert_close(lovasz_hinge(xr, yr), ref_lovasz(xr, yr), rtol=1e-5, atol=1e-6)


def test_lovasz_accepts_bool_and_nhw_targets_and_dict_output():
    x, y = batch(n=5, seed=5)
    want = lovasz_hinge(x, y)
    torch.testing.assert_close(lovasz_hinge(x, y.bool()), want)
    torch.testing.assert_close(lovasz_hinge(x, y[:, 0]), want)
    crit = build_loss("lovasz")
    torch.testing.assert_close(crit({"logits": x, "aux": [], "image_logit": torch.zeros(5)}, y), want)
    torch.testing.assert_close(crit(x, y), want)


def test_shape_mismatch_is_an_error():
    x, y = batch(n=4, h=8, w=8)
    with pytest.raises(ValueError, match="do not match"):
        lovasz_hinge(x, y[..., :7])
    with pytest.raises(ValueError, match="do not match"):
        lovasz_hinge(x, y[:3])
    with pytest.raises(ValueError, match="do not match"):
        build_loss("bce")(x, y[..., :7, :])


def test_symmetric_matches_reference_and_is_symmetric():
    x, y = batch(n=7, h=10, w=12, seed=6)
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    got = symmetric_lovasz(x1, y)
    want = ref_symmetric(x2, y)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    got.backward()
    want.backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(symmetric_lovasz(x, y), symmetric_lovasz(-x, 1 - y), rtol=1e-6, atol=1e-6)
    # and it differs from the plain hinge (the symmetric term is really there)
    assert not torch.allclose(symmetric_lovasz(x, y), lovasz_hinge(x, y))


def test_ignore_empty_matches_reference_and_ignores_added_empty_images():
    x, y = batch(n=6, seed=7)  # image 0 is empty
    got = symmetric_lovasz(x, y, ignore_empty=True)
    torch.testing.assert_close(got, ref_symmetric_ignore_empty(x, y), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, symmetric_lovasz(x[1:], y[1:]), rtol=1e-5, atol=1e-6)
    # adding empty-truth images with arbitrary logits changes nothing, value or gradient
    xe = 3.0 * torch.randn(4, *x.shape[1:], generator=torch.Generator().manual_seed(8))
    xa = torch.cat([x, xe]).requires_grad_()
    ya = torch.cat([y, torch.zeros_like(xe)])
    xb = x.clone().requires_grad_()
    la = symmetric_lovasz(xa, ya, ignore_empty=True)
    lb = symmetric_lovasz(xb, y, ignore_empty=True)
    torch.testing.assert_close(la, lb, rtol=1e-6, atol=1e-6)
    la.backward()
    lb.backward()
    torch.testing.assert_close(xa.grad[: len(x)], xb.grad)
    assert torch.all(xa.grad[0] == 0) and torch.all(xa.grad[len(x):] == 0)
    # plain (non-symmetric) variant too
    torch.testing.assert_close(lovasz_hinge(x, y, ignore_empty=True), lovasz_hinge(x[1:], y[1:]), rtol=1e-6, atol=1e-6)
    # but without ignore_empty the empty image does count
    assert not torch.allclose(symmetric_lovasz(x, y), symmetric_lovasz(x[1:], y[1:]))


@pytest.mark.parametrize("symmetric", [False, True])
def test_ignore_empty_all_empty_batch_is_zero_with_finite_grad(symmetric):
    x = torch.randn(3, 1, 6, 6, requires_grad=True)
    y = torch.zeros(3, 1, 6, 6)
    loss = lovasz_hinge(x, y, symmetric=symmetric, ignore_empty=True)
    assert loss.item() == 0.0 and loss.requires_grad and loss.dtype == torch.float32
    loss.backward()
    assert torch.all(x.grad == 0)
    crit = build_loss("symmetric_lovasz_ignore_empty" if symmetric else "lovasz_ignore_empty")
    assert crit(x, y).item() == 0.0


def test_empty_batch_gives_zero():
    x = torch.zeros(0, 1, 5, 5, requires_grad=True)
    y = torch.zeros(0, 1, 5, 5)
    for fn in (lovasz_hinge, symmetric_lovasz, soft_dice_loss):
        out = fn(x, y)
        assert out.item() == 0.0 and out.requires_grad


def _distinct_inputs(n, h, w, seed):
    """float64 logits whose per-image errors are at least 1e-2 apart (the sort is constant near them)."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, 1, h, w, generator=g) < 0.5).double()
    y[0] = 0.0  # one empty image
    while True:
        x = torch.randn(n, 1, h, w, generator=g, dtype=torch.float64)
        if min_gap(1 - x * (2 * y - 1)) > 1e-2:
            return x.requires_grad_(), y


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, y: lovasz_hinge(x, y),
        lambda x, y: lovasz_hinge(x, y, symmetric=True),
        lambda x, y: lovasz_hinge(x, y, symmetric=True, ignore_empty=True),
        lambda x, y: soft_dice_loss(x, y),
        lambda x, y: bce_loss(x, y),
    ],
    ids=["lovasz", "symmetric", "symmetric_ignore_empty", "dice", "bce"],
)
def test_gradcheck_float64(fn):
    x, y = _distinct_inputs(3, 3, 4, seed=9)
    assert fn(x, y).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda t: fn(t, y), (x,), eps=1e-6, atol=1e-5)


def test_gradcheck_deep_criterion_float64():
    x, y = _distinct_inputs(3, 3, 4, seed=10)
    aux, _ = _distinct_inputs(3, 3, 4, seed=11)
    img = torch.randn(3, dtype=torch.float64, requires_grad=True)
    crit = DeepSupervisionLoss()
    assert torch.autograd.gradcheck(
        lambda a, b, c: crit({"logits": a, "aux": [b], "image_logit": c}, y), (x, aux, img), eps=1e-6, atol=1e-5
    )


# ---------------------------------------------------------------------------------------------------------------
# BCE, Dice, combinations
# ---------------------------------------------------------------------------------------------------------------
def test_bce_equals_torch():
    x, y = batch(n=4, seed=12)
    want = F.binary_cross_entropy_with_logits(x, y)
    torch.testing.assert_close(bce_loss(x, y), want)
    torch.testing.assert_close(build_loss("bce")(x, y.bool()), want)
    torch.testing.assert_close(build_loss("bce")({"logits": x}, y), want)


def test_soft_dice_hand_computed():
    # image 0: p = 0.5 everywhere, y = [1, 1, 0, 0]: dice = (2*1 + 1) / (2 + 2 + 1) = 0.6 -> loss 0.4
    # image 1: p = 0.25 everywhere, y empty:        dice = (0 + 1) / (1 + 0 + 1) = 0.5 -> loss 0.5
    x = torch.zeros(2, 1, 2, 2)
    x[1] = math.log(0.25 / 0.75)
    y = torch.zeros(2, 1, 2, 2)
    y[0, 0, 0] = 1.0
    assert soft_dice_loss(x, y).item() == pytest.approx(0.45, abs=1e-6)
    assert build_loss("dice")(x, y).item() == pytest.approx(0.45, abs=1e-6)
    # smooth=0.5: image 0: 2.5 / 4.5, image 1: 0.5 / 1.5
    want = ((1 - 2.5 / 4.5) + (1 - 0.5 / 1.5)) / 2
    assert build_loss("dice", smooth=0.5)(x, y).item() == pytest.approx(want, abs=1e-6)


def test_combination_weights():
    x, y = batch(n=5, seed=13)
    lov, bce, dice = lovasz_hinge(x, y), bce_loss(x, y), soft_dice_loss(x, y)
    crit = build_loss("lovasz:0.7,bce:0.15,dice:0.15")
    assert isinstance(crit, WeightedSum)
    loss = crit(x.clone().requires_grad_(), y)
    torch.testing.assert_close(loss.detach(), 0.7 * lov + 0.15 * bce + 0.15 * dice)
    assert loss.requires_grad
    assert set(crit.last_parts) == {"lovasz", "bce", "dice", "loss"}
    torch.testing.assert_close(crit.last_parts["dice"], dice)
    assert not any(v.requires_grad for v in crit.last_parts.values())  # detached: safe to keep for logging
    torch.testing.assert_close(build_loss("bce+dice")(x, y), bce + dice)
    torch.testing.assert_close(build_loss(" BCE : 2 + Dice ")(x, y), 2 * bce + dice)
    torch.testing.assert_close(build_loss("lovasz:0.5")(x, y), 0.5 * lov)
    torch.testing.assert_close(
        build_loss("symmetric_lovasz:0.5,lovasz:0.5")(x, y), 0.5 * symmetric_lovasz(x, y) + 0.5 * lov
    )


def test_single_name_gives_the_bare_criterion():
    assert isinstance(build_loss("lovasz"), losses.LovaszHinge)
    assert isinstance(build_loss("deep"), DeepSupervisionLoss)
    assert isinstance(build_loss("dice"), losses.SoftDice)
    crit = build_loss("symmetric_lovasz", activation="relu")
    assert crit.symmetric and not crit.ignore_empty and crit.activation == "relu"
    for name in losses.LOSSES:
        assert isinstance(build_loss(name), torch.nn.Module)


# ---------------------------------------------------------------------------------------------------------------
# autocast
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec", ["lovasz", "symmetric_lovasz_ignore_empty", "bce", "dice", "lovasz:0.7,bce:0.15,dice:0.15", "deep"]
)
def test_autocast_bf16_inputs_give_float32_equal_to_fp32(spec):
    x, y = batch(n=6, h=12, w=12, seed=14)
    xb = x.bfloat16()
    aux = [(x * 0.5).bfloat16(), (x - 1).bfloat16()]
    img = torch.linspace(-2, 2, 6).bfloat16()
    out_b = {"logits": xb, "aux": aux, "image_logit": img}
    out_f = {"logits": xb.float(), "aux": [a.float() for a in aux], "image_logit": img.float()}
    crit = build_loss(spec)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = crit(out_b, y.bfloat16())
    want = crit(out_f, y)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_losses_run_with_autocast_disabled(monkeypatch):
    # Probe the ops each loss relies on: inside the loss, autocast must be off even when the caller's is on.
    seen = []

    def probe(fn):
        def wrapped(*args, **kwargs):
            seen.append((fn.__name__, torch.is_autocast_enabled("cpu")))
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(F, "elu", probe(F.elu))
    monkeypatch.setattr(F, "binary_cross_entropy_with_logits", probe(F.binary_cross_entropy_with_logits))
    monkeypatch.setattr(torch, "sigmoid", probe(torch.sigmoid))
    x, y = batch(n=4, h=8, w=8, seed=21)
    out = {"logits": x, "aux": [x], "image_logit": x.mean((1, 2, 3))}
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        build_loss("deep+lovasz+dice+bce")(out, y)
    assert {name for name, _ in seen} == {"elu", "binary_cross_entropy_with_logits", "sigmoid"}
    assert not any(enabled for _, enabled in seen), seen


def test_autocast_region_is_disabled_inside_the_loss():
    # Under autocast a matmul-like op would run in bf16; the loss must stay in float32 end to end, including the
    # gradient that reaches a float32 leaf.
    x, y = batch(n=4, h=10, w=10, seed=15)
    x = x.requires_grad_()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        loss = build_loss("deep")({"logits": x, "aux": [x], "image_logit": x.mean((1, 2, 3))}, y)
    assert loss.dtype == torch.float32
    loss.backward()
    assert x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()


# ---------------------------------------------------------------------------------------------------------------
# deep supervision
# ---------------------------------------------------------------------------------------------------------------
def _deep_output(n=6, h=11, w=13, seed=16, n_aux=3):
    x, y = batch(n=n, h=h, w=w, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    aux = [torch.randn(n, 1, h, w, generator=g) * (k + 1) for k in range(n_aux)]
    img = torch.randn(n, generator=g)
    return {"logits": x, "aux": aux, "image_logit": img}, y


def test_deep_equals_hand_combined_parts():
    out, y = _deep_output()
    has = (y.flatten(1).sum(1) > 0).float()
    assert has[0] == 0 and has[1:].all()
    image = F.binary_cross_entropy_with_logits(out["image_logit"], has)
    aux = sum(ref_symmetric_ignore_empty(a, y) for a in out["aux"])
    final = ref_symmetric(out["logits"], y)
    crit = build_loss("deep")
    loss = crit(out, y)
    torch.testing.assert_close(loss, 0.05 * image + 0.1 * aux + 1.0 * final, rtol=1e-5, atol=1e-6)
    parts = crit.last_parts
    assert set(parts) == {"image_bce", "aux_lovasz", "final_lovasz", "loss"}
    torch.testing.assert_close(parts["image_bce"], image)
    torch.testing.assert_close(parts["aux_lovasz"], aux, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts["final_lovasz"], final, rtol=1e-5, atol=1e-6)
    # configurable weights, and components() gives the same parts attached to the graph
    crit2 = build_loss("deep", image_weight=0.5, aux_weight=0.0, final_weight=2.0)
    torch.testing.assert_close(crit2(out, y), 0.5 * image + 2.0 * final, rtol=1e-5, atol=1e-6)
    comp = crit2.components(out, y)
    torch.testing.assert_close(comp["aux_lovasz"], aux, rtol=1e-5, atol=1e-6)


def test_deep_gradient_equals_hand_combined_gradient():
    out, y = _deep_output(n=4, seed=17, n_aux=2)
    leaves1 = [out["logits"].clone().requires_grad_(), *[a.clone().requires_grad_() for a in out["aux"]]]
    leaves2 = [t.detach().clone().requires_grad_() for t in leaves1]
    img = out["image_logit"]
    has = (y.flatten(1).sum(1) > 0).float()
    got = build_loss("deep")({"logits": leaves1[0], "aux": leaves1[1:], "image_logit": img}, y)
    want = (
        0.05 * F.binary_cross_entropy_with_logits(img, has)
        + 0.1 * sum(ref_symmetric_ignore_empty(a, y) for a in leaves2[1:])
        + ref_symmetric(leaves2[0], y)
    )
    got.backward()
    want.backward()
    for a, b in zip(leaves1, leaves2):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


def test_deep_edge_cases():
    out, y = _deep_output(n=4, seed=18)
    crit = DeepSupervisionLoss()
    no_aux = {"logits": out["logits"], "image_logit": out["image_logit"]}
    parts = crit.components(no_aux, y)
    assert parts["aux_lovasz"].item() == 0.0
    torch.testing.assert_close(parts["loss"], 0.05 * parts["image_bce"] + parts["final_lovasz"])
    # image_logit may be (N, 1)
    torch.testing.assert_close(crit({**out, "image_logit": out["image_logit"][:, None]}, y), crit(out, y))
    # all-empty batch: aux term is 0, everything finite
    x = out["logits"].clone().requires_grad_()
    loss = crit({**out, "logits": x}, torch.zeros_like(y))
    assert crit.last_parts["aux_lovasz"].item() == 0.0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="image_logit"):
        crit({"logits": out["logits"]}, y)
    assert DeepSupervisionLoss(image_weight=0)({"logits": out["logits"]}, y).item() > 0
    with pytest.raises(TypeError, match="output dict"):
        crit(out["logits"], y)
    with pytest.raises(ValueError, match="do not match"):
        crit({**out, "aux": [out["logits"][..., :5]]}, y)


def test_deep_inside_a_combination_reports_nested_parts():
    out, y = _deep_output(n=4, seed=19)
    crit = build_loss("deep+bce:0.5")
    loss = crit(out, y)
    torch.testing.assert_close(loss, build_loss("deep")(out, y) + 0.5 * bce_loss(out["logits"], y))
    assert {"deep", "deep/image_bce", "deep/aux_lovasz", "deep/final_lovasz", "bce", "loss"} == set(crit.last_parts)


# ---------------------------------------------------------------------------------------------------------------
# training: the loss goes down on a toy problem
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["lovasz", "lovasz:0.7,bce:0.15,dice:0.15", "deep"])
def test_loss_decreases_when_fitting_a_toy_mask(spec):
    torch.manual_seed(0)
    n, s = 4, 24
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    images = torch.rand(n, 1, s, s) * 0.2
    masks = torch.zeros(n, 1, s, s)
    for i in range(1, n):  # image 0 has no salt
        r = 3 + 2 * i
        disk = ((yy - s // 2) ** 2 + (xx - s // 2 + i) ** 2) <= r * r
        masks[i, 0][disk] = 1.0
        images[i, 0][disk] += 0.6
    body = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU())
    head = torch.nn.Conv2d(8, 1, 3, padding=1)
    aux_head = torch.nn.Conv2d(8, 1, 1)
    params = [*body.parameters(), *head.parameters(), *aux_head.parameters()]
    opt = torch.optim.Adam(params, lr=0.03)
    crit = build_loss(spec)

    def model(img):
        f = body(img)
        logits = head(f)
        return {"logits": logits, "aux": [aux_head(f)], "image_logit": logits.amax((1, 2, 3))}

    history = []
    for _ in range(60):
        loss = crit(model(images), masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert all(math.isfinite(v) for v in history)
    assert min(history[-5:]) < 0.6 * history[0], history[::10]
    with torch.no_grad():
        pred = model(images)["logits"] > 0
    iou = ((pred & masks.bool()).sum() / (pred | masks.bool()).sum()).item()
    assert iou > 0.6, iou


# ---------------------------------------------------------------------------------------------------------------
# factory errors
# ---------------------------------------------------------------------------------------------------------------
def test_unknown_loss_name_is_a_user_error_listing_valid_names():
    with pytest.raises(UserError) as err:
        build_loss("lovsaz")
    msg = str(err.value)
    assert "'lovsaz'" in msg and "did you mean 'lovasz'" in msg
    for name in ("deep", "lovasz", "symmetric_lovasz", "bce", "dice"):
        assert name in msg
    with pytest.raises(UserError, match="valid losses"):
        build_loss("tversky")
    with pytest.raises(UserError, match="unknown loss 'foo'"):
        build_loss("bce+foo")


@pytest.mark.parametrize(
    "spec,kwargs,match",
    [
        ("", {}, "empty loss spec"),
        ("bce+", {}, "empty term"),
        ("bce:abc", {}, "not a number"),
        ("bce:-1", {}, ">= 0"),
        ("bce:nan", {}, ">= 0"),
        ("bce+bce", {}, "twice"),
        ("bce", {"smooth": 2.0}, "takes no argument smooth"),
        ("deep", {"image_wieght": 0.1}, "takes no argument image_wieght"),
        ("deep", {"aux_weight": -1.0}, "aux_weight"),
        ("lovasz", {"activation": "tanh"}, "activation"),
        ("dice", {"smooth": 0.0}, "smooth"),
    ],
)
def test_bad_specs_and_arguments_are_user_errors(spec, kwargs, match):
    with pytest.raises(UserError, match=match):
        build_loss(spec, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    out, y = _deep_output(n=8, h=101, w=101, seed=20)
    cuda_out = {
        "logits": out["logits"].cuda(),
        "aux": [a.cuda() for a in out["aux"]],
        "image_logit": out["image_logit"].cuda(),
    }
    for spec in ("lovasz", "symmetric_lovasz", "deep", "lovasz:0.7,bce:0.15,dice:0.15"):
        crit = build_loss(spec)
        with torch.autocast(device_type="cuda", dtype=torch.float16):
            got = crit(cuda_out, y.cuda())
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.cpu(), crit(out, y), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# focal (the loss registered with an option of its own)
# ---------------------------------------------------------------------------------------------------------------
def test_focal_by_hand_and_gamma_zero_is_bce():
    x = torch.tensor([[[[0.0, 2.0], [-1.0, 3.0]]]])
    y = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    # by hand: p_t = sigmoid(x) for y=1, 1-sigmoid(x) for y=0; FL = mean((1-p_t)^2 * -log p_t)
    p_t = [0.5, 1 - 1 / (1 + math.exp(-2.0)), 1 - 1 / (1 + math.exp(1.0)), 1 / (1 + math.exp(-3.0))]
    want = sum((1 - p) ** 2 * -math.log(p) for p in p_t) / 4
    assert build_loss("focal")(x, y).item() == pytest.approx(want, rel=1e-5)
    assert build_loss("focal", gamma=0.0)(x, y).item() == pytest.approx(build_loss("bce")(x, y).item(), rel=1e-6)
    with pytest.raises(UserError, match="gamma"):
        build_loss("focal", gamma=-1.0)
