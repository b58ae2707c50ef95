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
from cli import train as train_cli
from engine import schedulers, trainer
from engine.config import TrainConfig
from tests.tiny import TINY
from tgs.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def run_train(data, log_dir, *extra):
    return train_cli.main(["--data-dir", str(data), "--log-dir", str(log_dir), *TINY, *extra])


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
    assert loaded.meta["config"]["data_fold"] == "fold0" and loaded.meta["epoch"] == 1
    assert TrainConfig.from_checkpoint(loaded.meta).run.comment == "hello"
    assert loaded.extra is None
    cfg = yaml.safe_load((log / "config.yaml").read_text())
    assert cfg["basenet"] == "unet" and cfg["max_epochs"] == 2 and "resume" not in cfg
    # the saved config repeats the run: same options, same weights
    log2 = tmp_path / "again"
    assert train_cli.main(["--config", str(log / "config.yaml"), "--log-dir", str(log2)]) == 0
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


def test_a_checkpoint_with_its_best_epochs_and_fold_beside_the_history_resumes_exactly(tiny_data, tmp_path):
    """Checkpoints written before the best values and the fold were read from the history and the configuration
    held them as well (extra state ``best``, ``best_epoch``, ``since_best_metric``; meta ``fold``)."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_train(tiny_data, straight, "--max-epochs", "2") == 0
    assert run_train(tiny_data, split, "--max-epochs", "1") == 0
    ck = split / "checkpoints" / "last-checkpoint-fold0.pth"
    raw = torch.load(ck, weights_only=True)
    raw["meta"]["fold"] = "fold0"
    raw["extra"]["state"].update(best={"metric": 2.0, "loss": -1.0, "accuracy": 2.0},
                                 best_epoch={"metric": 7, "loss": 7, "accuracy": 7}, since_best_metric=99)
    torch.save(raw, ck)
    assert run_train(tiny_data, split, "--max-epochs", "2", "--resume", str(ck)) == 0
    a = torch.load(straight / "checkpoints" / "last-checkpoint-fold0.pth", weights_only=True)
    b = torch.load(ck, weights_only=True)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert sorted(b["extra"]["state"]) == ["epoch", "history", "step"] and "fold" not in b["meta"]
    assert a["meta"]["names"] == b["meta"]["names"] != ["last"]  # what improved at epoch 1, from the history


def test_the_best_epochs_are_read_from_the_history():
    rows = [dict(epoch=0, val_metric=0.5, val_loss=0.9, val_accuracy=float("nan")),
            dict(epoch=1, val_metric=0.7, val_loss=0.8, val_accuracy=0.6),
            dict(epoch=2, val_metric=0.7, val_loss=0.95, val_accuracy=0.6),  # ties: the first epoch stays best
            dict(epoch=3, val_metric=float("nan"), val_loss=0.7, val_accuracy=0.5)]
    state = trainer.RunState(epoch=3, step=40, history=rows)
    assert state.best_epoch == {"metric": 1, "loss": 3, "accuracy": 1}
    assert state.best == {"metric": 0.7, "loss": 0.7, "accuracy": 0.6}
    assert state.since_best_metric == 2
    assert trainer.RunState(history=rows[:1]).since_best_metric == 0
    never = trainer.RunState(history=[dict(epoch=e, val_metric=float("nan"), val_loss=1.0, val_accuracy=0.0)
                                      for e in range(3)])
    assert never.best_epoch["metric"] == -1 and never.since_best_metric == 3
    assert trainer.RunState().best_epoch == {"metric": -1, "loss": -1, "accuracy": -1}
    assert trainer.RunState.from_dict(state.to_dict()) == state


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
    (["--resume", "."], "--resume . is a folder: give its checkpoints/last-checkpoint-*.pth file"),
    (["--config", "."], "--config . is a folder, not a YAML file"),
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
    c = train_cli.parse(["--config", str(cfg), "--batch-size", "9"])
    assert c.optim.batch_size == 9 and c.optim.learning_rate == 0.01
    cfg.write_text("batch_sise: 7\n")
    with pytest.raises(UserError, match="did you mean batch_size"):
        train_cli.parse(["--config", str(cfg)])


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
    cfg = train_cli.parse(["--data-dir", str(tiny_data), *TINY, "--data-fold", "fold01"])
    train_set, _, va = trainer.load_split(cfg)
    from engine import predict
    from tgs import metric

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
    assert train_cli.main(["--data-dir", str(data), "--log-dir", str(log), "--basenet", "unet", "--encoder-width", "8",
                       "--decoder-channels", "16", "--center-channels", "32", "--input-upsample", "1", "--oc", "center",
                       "--resize", "--input-size", "64", "--batch-size", "16", "--learning-rate", "3e-3",
                       "--warmup-epochs", "2", "--max-epochs", "10", "--dataload-workers-nums", "0",
                       "--device", "cpu", "--data-fold", "fold01"]) == 0
    cfg = train_cli.parse(["--data-dir", str(data), "--data-fold", "fold01"])
    train_set, _, va = trainer.load_split(cfg)
    baseline = (~train_set.masks[va].any(axis=(1, 2))).mean()  # the all-empty prediction's score
    best = pd.read_csv(log / "metrics.csv")["val_metric"].max()
    assert best > baseline + 0.1, (best, baseline)  # the harder sections: about 0.08 above after 6 epochs


# fp16 is emulated on CPUs: slow
@pytest.mark.parametrize("amp", ["bf16", pytest.param("fp16", marks=pytest.mark.slow)])
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
    from engine.trainer import to_model_targets
    from tgs.inputs import InputSpec

    spec = InputSpec("pad", 128)
    masks = torch.rand(2, 1, 101, 101) > 0.5
    out = {"logits": torch.randn(2, 1, 128, 128), "aux": [torch.randn(2, 1, 128, 128)], "image_logit": torch.zeros(2)}
    cropped, y = to_model_targets(out, masks, spec, loss_on_center=True)
    assert y.dtype == torch.float32 and torch.equal(y, masks.float())
    assert torch.equal(cropped["logits"], out["logits"][..., 13:114, 13:114])
    assert torch.equal(cropped["aux"][0], out["aux"][0][..., 13:114, 13:114])
    full, y = to_model_targets(out, masks, spec, loss_on_center=False)
    assert full is out and torch.equal(y[..., 13:114, 13:114], masks.float()) and y.shape[-1] == 128


# -- the typed configuration: every value from a file passes the same checks as the flag -------------------------
@pytest.mark.parametrize("yaml_text,fragment", [
    ("optim: sgdd\n", "key optim: 'sgdd' is not one of sgd, adam, adamw"),
    ("oc: centre\n", "key oc: 'centre' is not one of both, center, decoder, none"),
    ("amp: fp32\n", "key amp: 'fp32' is not one of none, bf16, fp16"),
    ("batch_size: 2.5\n", "key batch_size: 2.5 is not an integer"),
    ("batch-size: true\n", "key batch-size: True is not an integer"),
    ("resize: 1\n", "key resize: 1 is not true or false"),
    ("step_epochs: 0\n", "key step_epochs: must be >= 1, got 0"),
    ("learning_rate: .nan\n", "key learning_rate: nan is not a finite number"),
    ("threads: -1\n", "key threads: must be >= 0, got -1"),
    ("data_fold: foldx\n", "key data_fold: 'foldx' is not a fold name"),
    ("loss: lovas\n", "key loss: 'lovas' is not a loss"),
    ("device: gpu\n", "key device: 'gpu' is not a device"),
    ("resume: x.pth\n", "give --resume on the command line"),
    ("optm: sgd\n", "unknown option 'optm' (did you mean optim?)"),
    ("- a\n- b\n", "expected a mapping"),
    ("batch_size: 4\nbatch_size: 8\n", "key 'batch_size' is given twice"),
    ("batch-size: 4\nbatch_size: 8\n", "key batch_size: the option is given twice (also as batch-size)"),
    ("log_dir: ''\n", "key log_dir: an empty path"),
    ("seed: 99999999999999999999\n", "key seed: must be <= 4294967295, got 99999999999999999999"),
    ("drop_mask_threshold: 20000\n", "key drop_mask_threshold: must be <= 10201, got 20000"),
    ("loss: 'lovasz:0'\n", "every weight is 0"),
])
def test_bad_config_values_exit_2_with_one_line_naming_file_and_key(tmp_path, capsys, yaml_text, fragment):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    assert train_cli.main(["--config", str(cfg), "--log-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err and str(cfg) in err, err
    assert not (tmp_path / "r").exists()  # refused before any work


@pytest.mark.parametrize("flags,fragment", [
    (["--optim", "sgdd"], "--optim: 'sgdd' is not one of sgd, adam, adamw"),
    (["--batch-size", "2.5"], "--batch-size: '2.5' is not an integer"),
    (["--lr-scheduler", "step", "--step-epochs", "0"], "--step-epochs: must be >= 1, got 0"),
    (["--threads", "-1"], "--threads: must be >= 0, got -1"),
    (["--dropout", "1"], "--dropout: must be < 1, got 1"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--loss-on-center", "--resize"], "--loss-on-center needs reflect padding"),
    (["--threads", "100000"], "--threads: must be <= 1024, got 100000"),
    (["--seed", "99999999999999999999"], "--seed: must be <= 4294967295, got 99999999999999999999"),
    (["--input-size", "100000"], "--input-size: must be <= 1024, got 100000"),
    (["--learning-rate", "1e300"], "--learning-rate: must be <= 10, got 1e+300"),
    (["--lr-scheduler", "step", "--gamma", "5"], "--gamma: must be <= 1, got 5"),
    (["--loss", "lovasz:0"], "every weight is 0"),
    (["--log-dir", ""], "--log-dir: an empty path"),
    (["--image-loss-weight", "0", "--aux-loss-weight", "0", "--final-loss-weight", "0"], "weights are all 0"),
])
def test_bad_flags_exit_2_with_the_same_kind_of_line(tmp_path, capsys, flags, fragment):
    assert train_cli.main(["--log-dir", str(tmp_path / "r"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err, err


def test_a_bad_file_value_is_refused_even_where_a_flag_overrides_it(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim: sgdd\n")
    assert train_cli.main(["--config", str(cfg), "--optim", "adam", "--log-dir", str(tmp_path / "r")]) == 2
    assert f"--config {cfg}, key optim: 'sgdd' is not one of" in capsys.readouterr().err


def test_resume_into_a_folder_of_another_run_is_refused(tiny_data, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_train(tiny_data, a, "--max-epochs", "1") == 0
    assert run_train(tiny_data, b, "--max-epochs", "1", "--seed", "7") == 0
    before = {p.name: p.read_bytes() for p in (b / "checkpoints").iterdir()}
    capsys.readouterr()
    assert run_train(tiny_data, b, "--max-epochs", "2", "--resume",
                     str(a / "checkpoints" / "last-checkpoint-fold0.pth")) == 2
    err = capsys.readouterr().err
    assert f"--log-dir {b} already holds another run than --resume" in err and err.count("\n") == 1
    assert before == {p.name: p.read_bytes() for p in (b / "checkpoints").iterdir()}  # b untouched
    assert run_train(tiny_data, a, "--max-epochs", "2", "--resume",
                     str(a / "checkpoints" / "last-checkpoint-fold0.pth")) == 0  # its own folder: fine


def test_cross_checks_name_the_file_of_a_value(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("loss_on_center: true\n")
    with pytest.raises(UserError, match=r"key loss_on_center needs reflect padding: it cannot be used with --resize"):
        train_cli.parse(["--config", str(cfg), "--resize"])


def test_config_round_trips_through_dict_and_checkpoint_meta():
    c = train_cli.parse(["--basenet", "unet", "--batch-size", "7", "--oc", "center", "--comment", "x"])
    assert TrainConfig.from_dict(c.to_dict()) == c
    assert TrainConfig.from_checkpoint({"config": c.to_dict()}) == c
    assert TrainConfig.from_checkpoint({"config": {"batch_size": 7, "unknown_old_key": 1}}).optim.batch_size == 7
    assert c.model.model_config().oc_center and not c.model.model_config().oc_decoder
    assert c.differences(c.replace(batch_size=8)) == ["batch_size 7 -> 8"]


# -- nothing lost: an existing run, the checkpoint set after a kill, divergence, resume checks -----------------------
def test_a_fresh_run_into_a_folder_holding_a_run_is_refused(tiny_data, tmp_path, capsys):
    log = tmp_path / "r"
    assert run_train(tiny_data, log, "--max-epochs", "2", "--lr-scheduler", "cos", "--cycle-epochs", "1") == 0
    before = sorted(p.name for p in log.rglob("*") if p.is_file())
    capsys.readouterr()
    assert run_train(tiny_data, log, "--max-epochs", "1") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--log-dir {log} already holds a run" in err
    assert f"--resume {log / 'checkpoints' / 'last-checkpoint-fold0.pth'}" in err and "--overwrite" in err
    assert sorted(p.name for p in log.rglob("*") if p.is_file()) == before  # untouched
    assert run_train(tiny_data, log, "--max-epochs", "1", "--overwrite") == 0
    assert not list((log / "models").glob("snapshot-*"))  # no model of the old run is left to mix in
    assert pd.read_csv(log / "metrics.csv")["epoch"].tolist() == [0]
    assert run_train(tiny_data, tmp_path / "empty-dir-is-fine", "--max-epochs", "1") == 0


class Killed(BaseException):
    """A kill at a chosen moment: nothing catches it (like SIGKILL, minus the temporary files a kill leaves)."""


def test_a_kill_between_last_and_the_best_names_is_mended_on_resume(tiny_data, tmp_path, monkeypatch):
    import os

    from engine import saver

    log = tmp_path / "k"
    real_link, calls = saver.link, {"n": 0}

    def link_then_die(src, dst):
        calls["n"] += 1
        if calls["n"] > 3:  # epoch 0 links best-{metric,loss,accuracy} checkpoints...; die on the 4th link
            raise Killed()
        real_link(src, dst)

    monkeypatch.setattr(saver, "link", link_then_die)
    with pytest.raises(Killed):
        run_train(tiny_data, log, "--max-epochs", "2")
    ck = log / "checkpoints"
    (ck / ".last-checkpoint-fold0.pth.abc123.tmp").write_bytes(b"half")  # what a real kill leaves
    last = models.read_checkpoint(ck / "last-checkpoint-fold0.pth")
    assert last["meta"]["epoch"] == 0
    best_epoch = trainer.RunState.from_dict(last["extra"]["state"]).best_epoch  # read from the history
    def agrees(kind):
        best = ck / f"best-{kind}-checkpoint-fold0.pth"
        return best.exists() and os.path.samefile(ck / "last-checkpoint-fold0.pth", best)

    assert not all(agrees(k) for k, e in best_epoch.items() if e == 0)  # the kill left the set broken
    monkeypatch.setattr(saver, "link", real_link)
    assert run_train(tiny_data, log, "--max-epochs", "1", "--resume", str(ck / "last-checkpoint-fold0.pth")) == 0
    for kind, epoch in best_epoch.items():  # every promised file exists and agrees with last
        for path in (ck / f"best-{kind}-checkpoint-fold0.pth", log / "models" / f"best-{kind}-fold0.pth"):
            assert models.read_checkpoint(path)["meta"]["epoch"] == epoch
    assert not list(ck.glob(".*.tmp"))


def test_non_finite_validation_loss_stops_and_keeps_the_last_finite_state(tiny_data, tmp_path, monkeypatch,
                                                                         capsys):
    real = trainer.build_criterion
    epochs = {"valid": 0}

    def poisoned(cfg):
        crit = real(cfg)

        def wrapped(out, y):
            loss = crit(out, y)
            if not torch.is_grad_enabled():  # validation
                return loss * float("nan") if epochs["valid"] >= 2 else loss
            return loss
        return wrapped

    monkeypatch.setattr(trainer, "build_criterion", poisoned)
    real_eval = trainer.evaluate

    def counting(ctx, epoch):
        epochs["valid"] += 1
        return real_eval(ctx, epoch)

    monkeypatch.setattr(trainer, "evaluate", counting)
    log = tmp_path / "nanval"
    assert run_train(tiny_data, log, "--max-epochs", "3") == 2
    err = capsys.readouterr().err
    assert "the validation loss became nan at epoch 1" in err and err.count("\n") == 1
    assert "last-checkpoint-fold0.pth, is intact" in err
    for path in log.rglob("*.pth"):
        assert models.read_checkpoint(path)["meta"]["epoch"] == 0, path


def test_nan_in_the_first_epoch_says_no_checkpoint_exists(tiny_data, tmp_path, monkeypatch, capsys):
    real = trainer.build_criterion
    monkeypatch.setattr(trainer, "build_criterion", lambda cfg: (lambda out, y: real(cfg)(out, y) * float("nan")))
    assert run_train(tiny_data, tmp_path / "n0", "--max-epochs", "2") == 2
    err = capsys.readouterr().err
    assert "the loss became nan at epoch 0, batch 0" in err and "no checkpoint was written yet" in err
    assert "intact" not in err


def test_resume_only_with_the_same_data_and_options(tiny_data, tmp_path, capsys):
    from datasets.synthetic import write_dataset

    log = tmp_path / "same"
    assert run_train(tiny_data, log, "--max-epochs", "1") == 0
    ck = str(log / "checkpoints" / "last-checkpoint-fold0.pth")
    capsys.readouterr()
    assert run_train(tiny_data, log, "--max-epochs", "2", "--resume", ck, "--learning-rate", "0.1") == 2
    err = capsys.readouterr().err
    assert "was trained with other options (learning_rate 0.0005 -> 0.1)" in err and err.count("\n") == 1
    other = tmp_path / "other-data"
    write_dataset(other, n_train=40, n_test=8, seed=99)
    assert run_train(other, log, "--max-epochs", "2", "--resume", ck) == 2
    assert "was trained on other data" in capsys.readouterr().err
    assert run_train(tiny_data, log, "--max-epochs", "2", "--resume", ck, "--threads", "1") == 0  # more epochs: fine


def test_an_option_that_the_configuration_does_not_use_gets_a_note(tmp_path):
    from engine import config as C

    flags, _ = train_cli.given(["--momentum", "0.5", "--lr-scheduler", "step", "--warmup-epochs", "3",
                                "--aux-loss-weight", "0.2", "--loss", "bce", "--gamma", "0.5"])
    assert C.resolve(flags).unused(flags) == [
        "--aux-loss-weight is not used with --loss bce (only with the deep loss)",
        "--momentum is not used with --optim adamw (only with sgd)",
        "--warmup-epochs is not used with --lr-scheduler step (only with noam)"]
    flags, _ = train_cli.given(["--optim", "sgd", "--momentum", "0.5", "--lr-scheduler", "step", "--gamma", "0.5"])
    assert C.resolve(flags).unused(flags) == []
    saved = tmp_path / "config.yaml"  # a run's resolved config names every option: its defaults say nothing
    C.save_yaml(C.resolve(flags), saved)
    assert C.resolve({}, saved).unused(C.read_yaml(saved)) == []
