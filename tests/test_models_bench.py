"""bench/bench_models.py runs (a smoke test: one tiny measurement, no timing asserted)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def bench():
    from bench import bench_models

    return bench_models


def test_worker_measures_both_modes(bench, capsys):
    spec = dict(model="resnet18", device="cpu", dtype="bf16", channels_last=True, batch_size=2, size=32,
                iters=1, warmup=0, threads=0)
    rows = bench.worker(spec)["rows"]
    assert [r["mode"] for r in rows] == ["fwd", "fwd+bwd"]
    assert all(r["images_s"] > 0 and r["encoder"] == "resnet18" and r["peak_mib"] >= 0 for r in rows)
    bench.print_table(rows, "test")
    out = capsys.readouterr().out
    assert "img/s" in out and "fwd+bwd" in out
