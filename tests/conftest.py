import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import shutil  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import tgs.compat  # noqa: E402,F401  (before anything imports torchvision or timm)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests use tiny tensors: one intra-op thread is as fast, and immune to OpenMP spin-waits on shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A small synthetic dataset in Kaggle's layout, shared read-only by the whole session."""
    from datasets.synthetic import write_dataset

    root = tmp_path_factory.mktemp("synthetic")
    write_dataset(root, n_train=120, n_test=40, seed=7)
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A tiny synthetic dataset (40 train, 8 test tiles) for tests that train, shared read-only by the session."""
    from datasets.synthetic import write_dataset

    root = tmp_path_factory.mktemp("tinydata")
    write_dataset(root, n_train=40, n_test=8, seed=3)
    return root


@pytest.fixture
def data_copy(synthetic_root, tmp_path):
    """A private, writable copy of the synthetic dataset (for tests that damage it)."""
    dst = tmp_path / "data"
    shutil.copytree(synthetic_root, dst, ignore=shutil.ignore_patterns(".cache"))
    return dst


@pytest.fixture(scope="session")
def truth(synthetic_root):
    """(ids, masks) of the shared synthetic training set, from its train.csv."""
    from tgs import submission

    return submission.read_truth(synthetic_root / "train.csv")


@pytest.fixture
def run_score(capsys):
    """Call score.py's main in-process: ``run_score(argv) -> (exit code, stdout, stderr)``."""
    from cli import score

    def run(argv):
        code = score.main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
