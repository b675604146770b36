import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from testing_utils import make_calibration, make_char_tokenizer, make_tiny_model  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: pass --run-slow to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture
def tiny_model():
    return make_tiny_model("llama")


@pytest.fixture(scope="module")
def tok():
    """The offline character tokenizer with an R1-style chat template (one per test module)."""
    return make_char_tokenizer()


@pytest.fixture(scope="module")
def model():
    """A tiny random Qwen2 over that tokenizer's vocabulary, for rollouts (one per test module)."""
    return make_tiny_model("qwen2", vocab_size=128, max_position_embeddings=2048)


@pytest.fixture
def calibration():
    return make_calibration(num_rows=6, seq_len=24, vocab_size=128)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
