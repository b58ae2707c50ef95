"""bench/bench_gpu.py works before a GPU exists: the whole run with --tiny on the CPU (the GPU run's code, smaller
sizes), and what does not apply becomes a note. No timing is asserted; only that every number is there and > 0.

torch.compile is given the ``eager`` backend here: dynamo still captures the model and the training step (the
compile row's code path), but inductor's C++ code generation, minutes on a shared 2-core CPU, is left out.
"""
from __future__ import annotations

import functools
import time

import pytest
import torch

from bench import bench_gpu


def table_rows(out: str) -> tuple[list[str], list[dict]]:
    lines = [line for line in out.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(head, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
    return head, rows


def number(cell: str) -> float | None:
    return None if cell == "n/a" else float(cell)


def test_tiny_run_prints_every_row_with_positive_numbers(capsys, monkeypatch):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    code = bench_gpu.main(["--tiny"])
    out = capsys.readouterr().out
    assert code == 0
    head, rows = table_rows(out)
    assert head == bench_gpu.HEAD

    by_part = {}
    for r in rows:
        by_part.setdefault(r["part"], []).append(r)
    part1 = {r["configuration"]: r for r in by_part["1"]}
    assert list(part1) == [label for _, label, _ in bench_gpu.ROWS]
    measured = by_part["1"] + by_part["2"] + by_part["3"] + by_part["4"][:1]
    assert len(by_part["2"]) == 2 and len(by_part["3"]) == 2
    assert [r["measurement"].split(" (")[0] for r in by_part["4"][:2]] == ["validation, flip TTA",
                                                                          "checkpoint set"]
    for r in measured:
        assert number(r["images"]) > 0 and number(r["seconds"]) > 0 and number(r["images/s"]) > 0, r
        assert r["peak GiB"] == "n/a", r  # the CPU: no torch.cuda memory
        assert not r["note"].startswith("left out"), r
    assert number(by_part["4"][1]["seconds"]) > 0  # the checkpoint set (no images)
    assert "first step (compilation)" in part1["bf16 + channels_last + torch.compile"]["note"]
    assert "epoch / model-only" in by_part["2"][1]["note"]

    projected = [r for r in by_part["4"] if r["measurement"].startswith("projected")]
    assert [r["measurement"].split(":")[0] for r in projected[:2]] == ["projected epoch", "projected 250-epoch fold"]
    assert all(number(r["seconds"]) > 0 and r["images/s"] == "n/a" for r in projected)
    fold_s = number(projected[1]["seconds"])
    epoch_s = number(projected[0]["seconds"])
    assert fold_s == pytest.approx(250 * epoch_s, rel=0.01)
    verdict = [line for line in out.splitlines() if line.startswith("verdict:")]
    assert len(verdict) == 1 and ("MEETS" in verdict[0] or "MISSES" in verdict[0])


@pytest.fixture
def plan(synthetic_root, tmp_path):
    return bench_gpu.Plan(device=torch.device("cpu"), batch_size=2, images=8, test_images=4, steps=1, warmup=1,
                          workers=0, model_flags=bench_gpu.TINY, model_name="tiny", tmp=tmp_path, amp_ok=True,
                          train_dir=synthetic_root)


def test_a_failing_compile_is_a_note_not_a_crash(plan, monkeypatch):
    class Broken(torch.nn.Module):  # what torch.compile returns, failing at its first call as compilation does
        def __init__(self, model, *args, **kwargs):
            super().__init__()
            self.model = model

        def forward(self, x):
            raise RuntimeError("backend exploded\nsecond line")

    monkeypatch.setattr(torch, "compile", Broken)
    key, label, flags = bench_gpu.ROWS[-1]
    row, ctx = bench_gpu.train_row(plan, key, label, flags, seconds=60, keep=True)
    assert ctx is None and row.seconds is None and row.rate is None
    assert row.note == "left out: RuntimeError: backend exploded"


def test_rows_without_bf16_are_left_out_with_a_note(plan):
    plan.amp_ok = False
    for key, label, flags in bench_gpu.ROWS[1:]:
        row, ctx = bench_gpu.train_row(plan, key, label, flags, seconds=60, keep=True)
        assert ctx is None and row.seconds is None
        assert row.note == "left out: bf16 is not supported on cpu"
    row, ctx = bench_gpu.train_row(plan, *bench_gpu.ROWS[0], seconds=60, keep=True)  # fp32 still runs
    assert row.rate > 0 and ctx is not None
    bench_gpu.close(ctx, plan.device)


def test_a_call_past_its_deadline_is_interrupted():
    t0 = time.perf_counter()
    with pytest.raises(bench_gpu.OverBudget):
        with bench_gpu.time_limit(0.05):
            time.sleep(30)
    assert time.perf_counter() - t0 < 30  # interrupted, not slept through


def test_the_test_set_shrinks_to_fit_its_budget(plan):
    plan.test_images, plan.generate_s_per_image = 18000, 0.002
    assert bench_gpu.test_set_size(plan, model_rate=400.0, seconds=1000.0) == 18000
    # 0.002 + 2/400 = 7 ms an image: 80% of 70 s holds 8000 images
    assert 7999 <= bench_gpu.test_set_size(plan, model_rate=400.0, seconds=70.0) <= 8000


def test_the_projection_adds_validation_and_saving_per_epoch():
    valid = bench_gpu.Row(4, "validation", "x", images=200, seconds=1.0)  # 400 images: 2 s
    save = bench_gpu.Row(4, "save", "x", seconds=0.8)
    rows, verdict = bench_gpu.projection(600.0, "test", valid, save)
    epoch, fold = rows
    assert epoch.seconds == pytest.approx(3600 / 600 + 2.0 + 0.8)
    assert fold.seconds == pytest.approx(250 * 8.8)  # 2200 s = 36.7 min > 30 min
    assert "MISSES" in verdict and "36.7 min" in verdict
    # 7.2 s an epoch, less 2.8 s of validation and saving: 3600 images in 4.4 s
    assert "the target needs 818 training images/s" in verdict
    _, verdict = bench_gpu.projection(1200.0, "test", valid, save)  # 3 + 2.8 s an epoch: 24.2 min
    assert "MEETS" in verdict
