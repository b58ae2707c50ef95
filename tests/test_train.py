"""train.py end to end on tiny data: files, exact resume, NaN stop, bad input, config round trip, DDP on gloo."""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import models
import train
from tgs import options, schedulers, trainer

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--basenet", "unet", "--encoder-width", "4", "--decoder-channels", "8", "--center-channels", "16",
        "--input-upsample", "1", "--oc", "center", "--resize", "--input-size", "32", "--batch-size", "8",
        "--dataload-workers-nums", "0", "--device", "cpu", "--warmup-epochs", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from datasets.synthetic import write_dataset

    root = tmp_path_factory.mktemp("tinydata")
    write_dataset(root, n_train=40, n_test=8, seed=3)
    return root


def run_train(data, log_dir, *extra):
    return train.main(["--data-dir", str(data), "--log-dir", str(log_dir), *TINY, *extra])


def test_files_and_config_round_trip(tiny_data, tmp_path, capsys):
    log = tmp_path / "run"
    assert run_train(tiny_data, log, "--max-epochs", "2", "--vtf", "--comment", "hello") == 0
    out = capsys.readouterr().out
    assert "fold fold0: 36 training, 4 validation images" in out and "epoch   1" in out
    for name in ("last", "best-metric", "best-loss", "best-accuracy"):
        assert (log / "checkpoints" / f"{name}-checkpoint-fold0.pth").is_file()
        assert (log / "models" / f"{name}-fold0.pth").is_file()
    metrics = pd.read_csv(log / "metrics.csv")
    assert list(metrics["epoch"]) == [0, 1]
    assert {"lr", "train_loss", "val_loss", "val_metric", "val_accuracy"} <= set(metrics.columns)
    assert list(log.glob("events.out.tfevents.*"))
    loaded = models.load(log / "models" / "last-fold0.pth")
    assert loaded.input_spec.mode == "resize" and loaded.input_spec.size == 32
    assert loaded.meta["fold"] == "fold0" and loaded.meta["epoch"] == 1 and loaded.meta["comment"] == "hello"
    assert loaded.extra is None
    cfg = yaml.safe_load((log / "config.yaml").read_text())
    assert cfg["basenet"] == "unet" and cfg["max_epochs"] == 2 and "resume" not in cfg
    # the saved config repeats the run: same options, same weights
    log2 = tmp_path / "again"
    assert train.main(["--config", str(log / "config.yaml"), "--log-dir", str(log2)]) == 0
    a = torch.load(log / "models" / "last-fold0.pth", weights_only=True)["state_dict"]
    b = torch.load(log2 / "models" / "last-fold0.pth", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_is_exact(tiny_data, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_train(tiny_data, straight, "--max-epochs", "3") == 0
    assert run_train(tiny_data, split, "--max-epochs", "1") == 0
    ck = split / "checkpoints" / "last-checkpoint-fold0.pth"
    assert run_train(tiny_data, split, "--max-epochs", "3", "--resume", str(ck)) == 0
    a = torch.load(straight / "checkpoints" / "last-checkpoint-fold0.pth", weights_only=True)
    b = torch.load(ck, weights_only=True)
    assert a["meta"]["epoch"] == b["meta"]["epoch"] == 2
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    pd.testing.assert_frame_equal(pd.read_csv(straight / "metrics.csv").drop(columns="time_s"),
                                  pd.read_csv(split / "metrics.csv").drop(columns="time_s"))


def test_nan_loss_stops_with_a_clear_message(tiny_data, tmp_path, monkeypatch, capsys):
    real = trainer.build_criterion
    calls = {"n": 0}

    def poisoned(args):
        crit = real(args)

        def wrapped(out, y):
            calls["n"] += 1
            loss = crit(out, y)
            return loss * float("nan") if calls["n"] > 8 else loss  # epoch 0: 4 train + 1 valid batches
        return wrapped

    monkeypatch.setattr(trainer, "build_criterion", poisoned)
    log = tmp_path / "nan"
    assert run_train(tiny_data, log, "--max-epochs", "3") == 2
    err = capsys.readouterr().err
    assert "the loss became nan at epoch 1, batch 3, step 7" in err and err.count("\n") == 1
    good = models.read_checkpoint(log / "checkpoints" / "last-checkpoint-fold0.pth")
    assert good["meta"]["epoch"] == 0
    assert all(torch.isfinite(t).all() for t in good["state_dict"].values() if t.is_floating_point())


@pytest.mark.parametrize("extra,fragment", [
    (["--data-fold", "fold11"], "repeats a fold"),
    (["--data-fold", "foldx"], "is not a fold name"),
    (["--basenet", "resnet1888"], "resnet1888"),
    (["--loss-on-center"], "--loss-on-center needs reflect padding"),
    (["--resume", "nowhere.pth"], "--resume nowhere.pth does not exist"),
    (["--loss", "lovas"], "lovas"),
    (["--input-size", "33"], "33"),
    (["--sync-bn"], "--sync-bn needs CUDA"),
])
def test_bad_options_exit_2_with_one_line(tiny_data, tmp_path, capsys, extra, fragment):
    assert run_train(tiny_data, tmp_path / "bad", "--max-epochs", "1", *extra) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.startswith("error: ") and err.count("\n") == 1, err


def test_missing_data_dir(tmp_path, capsys):
    assert run_train(tmp_path / "nodata", tmp_path / "r", "--max-epochs", "1") == 2
    assert "datasets.synthetic" in capsys.readouterr().err


def test_resume_from_a_model_file_is_refused(tiny_data, tmp_path, capsys):
    log = tmp_path / "r"
    assert run_train(tiny_data, log, "--max-epochs", "1") == 0
    capsys.readouterr()
    assert run_train(tiny_data, log, "--max-epochs", "2", "--resume", str(log / "models" / "last-fold0.pth")) == 2
    assert "without training state" in capsys.readouterr().err


def test_config_file_precedence_and_unknown_keys(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("batch-size: 7\nlearning_rate: 0.01\n")
    args = options.parse(["--config", str(cfg), "--batch-size", "9"])
    assert args.batch_size == 9 and args.learning_rate == 0.01
    cfg.write_text("batch_sise: 7\n")
    with pytest.raises(options.UserError, match="did you mean batch_size"):
        options.parse(["--config", str(cfg)])


def test_noam_and_other_schedules():
    noam = schedulers.Noam(10)
    assert noam(9) == pytest.approx(1.0)  # the peak at e = w
    assert noam(0) == pytest.approx(math.sqrt(10) * 10 ** -1.5)  # e=1: linear warm-up 1/w
    assert noam(39) == pytest.approx(math.sqrt(10) / math.sqrt(40))  # decay as sqrt(w / e)
    cos = schedulers.CosineRestarts(4, 0.0)
    assert [round(cos(e), 6) for e in range(5)] == [1.0, round(0.5 * (1 + math.cos(math.pi / 4)), 6), 0.5,
                                                    round(0.5 * (1 + math.cos(3 * math.pi / 4)), 6), 1.0]
    assert cos.cycle_ends(3) and not cos.cycle_ends(2)
    tri = schedulers.Triangular(2, 0.0)
    assert [tri(e) for e in range(5)] == [0.0, 0.5, 1.0, 0.5, 0.0]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    sch = schedulers.build("noam", opt, base_lr=0.5, warmup=2)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedulers.step(sch, 0.0)
    assert lrs == pytest.approx([0.5 * math.sqrt(2) * 2 ** -1.5, 0.5, 0.5 * math.sqrt(2 / 3), 0.5 * math.sqrt(2 / 4)])


def test_early_stopping(tiny_data, tmp_path, capsys):
    log = tmp_path / "es"
    assert run_train(tiny_data, log, "--max-epochs", "30", "--early-stopping", "1", "--learning-rate", "1e-9",
                     "--lr-scheduler", "step") == 0
    out = capsys.readouterr().out
    assert "early stopping" in out
    assert len(pd.read_csv(log / "metrics.csv")) < 30


def test_ddp_two_gloo_processes_validate_like_one(tiny_data, tmp_path):
    log = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    import socket

    with socket.socket() as sock:  # a free local port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           "--master_addr=127.0.0.1",
           str(ROOT / "train.py"), "--data-dir", str(tiny_data), "--log-dir", str(log), *TINY,
           "--max-epochs", "1", "--data-fold", "fold01"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "x2 processes" in r.stdout
    row = pd.read_csv(log / "metrics.csv").iloc[0]
    # the same model, validated by a single process over the whole fold, gives the same metric
    loaded = models.load(log / "models" / "last-fold0.pth".replace("fold0", "fold01"))
    args = options.parse(["--data-dir", str(tiny_data), *TINY, "--data-fold", "fold01"])
    train_set, _, va = trainer.split_data(args)
    from tgs import metric, predict

    with torch.no_grad():
        pred = predict.forward(loaded.model, loaded.input_spec, torch.from_numpy(train_set.images[va])[:, None])
    single = metric.score((pred.probs[:, 0] > 0.5).numpy(), train_set.masks[va])
    assert len(va) == 8 and row["val_metric"] == pytest.approx(single)


@pytest.mark.slow
def test_synthetic_data_is_learnable(tmp_path):
    """A small UNet clearly beats the all-empty baseline on the synthetic data within a few epochs."""
    from datasets.synthetic import write_dataset

    data = tmp_path / "data"
    write_dataset(data, n_train=400, n_test=1, seed=11)
    log = tmp_path / "learn"
    assert train.main(["--data-dir", str(data), "--log-dir", str(log), "--basenet", "unet", "--encoder-width", "8",
                       "--decoder-channels", "16", "--center-channels", "32", "--input-upsample", "1", "--oc", "center",
                       "--resize", "--input-size", "64", "--batch-size", "16", "--learning-rate", "3e-3",
                       "--warmup-epochs", "2", "--max-epochs", "6", "--dataload-workers-nums", "0",
                       "--device", "cpu", "--data-fold", "fold01"]) == 0
    args = options.parse(["--data-dir", str(data), "--data-fold", "fold01"])
    train_set, _, va = trainer.split_data(args)
    baseline = (~train_set.masks[va].any(axis=(1, 2))).mean()  # the all-empty prediction's score
    best = pd.read_csv(log / "metrics.csv")["val_metric"].max()
    assert best > baseline + 0.2, (best, baseline)


@pytest.mark.parametrize("amp", ["bf16", pytest.param("fp16", marks=pytest.mark.slow)])  # fp16 is emulated on CPUs: slow
def test_amp_channels_last_accumulation_and_snapshots(tiny_data, tmp_path, amp):
    log = tmp_path / amp
    assert run_train(tiny_data, log, "--max-epochs", "2", "--amp", amp, "--channels-last",
                     "--gradient-accumulation", "2", "--lr-scheduler", "cos", "--cycle-epochs", "1",
                     "--optim", "sgd", "--loss", "lovasz:0.7,bce:0.15,dice:0.15") == 0
    assert sorted(p.name for p in (log / "models").glob("snapshot-*")) == ["snapshot-e000-fold0.pth",
                                                                          "snapshot-e001-fold0.pth"]
    m = pd.read_csv(log / "metrics.csv")
    assert np.isfinite(m[["train_loss", "val_loss", "val_metric"]].to_numpy()).all()
    ck = models.read_checkpoint(log / "checkpoints" / "last-checkpoint-fold0.pth")
    assert ck["extra"]["state"]["step"] == 4  # 4 batches an epoch, 2 per optimiser step, 2 epochs
    assert (ck["extra"]["scaler"] is not None) == (amp == "fp16")


def test_loss_on_center_targets_are_the_original_masks():
    """--loss-on-center (pad mode): outputs are cropped to the image's 101x101 and the targets are its masks."""
    from types import SimpleNamespace

    from tgs.inputs import InputSpec
    from tgs.trainer import to_model_targets

    spec = InputSpec("pad", 128)
    masks = torch.rand(2, 1, 101, 101) > 0.5
    out = {"logits": torch.randn(2, 1, 128, 128), "aux": [torch.randn(2, 1, 128, 128)], "image_logit": torch.zeros(2)}
    ctx = SimpleNamespace(spec=spec, args=SimpleNamespace(loss_on_center=True))
    cropped, y = to_model_targets(ctx, out, masks)
    assert y.dtype == torch.float32 and torch.equal(y, masks.float())
    assert torch.equal(cropped["logits"], out["logits"][..., 13:114, 13:114])
    assert torch.equal(cropped["aux"][0], out["aux"][0][..., 13:114, 13:114])
    ctx.args.loss_on_center = False
    full, y = to_model_targets(ctx, out, masks)
    assert full is out and torch.equal(y[..., 13:114, 13:114], masks.float()) and y.shape[-1] == 128
