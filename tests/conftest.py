"""Fixtures and hooks shared by every test (helpers to import live in tests/helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import cuda_available, toy_sentiment_files


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine the
    threads' spin-waits made each case ~50x slower (measured: 49 s -> 1 s for one case)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory) -> dict[str, Path]:
    """Toy sentiment train/val files (32 + 8 rows), one pair per test module."""
    return toy_sentiment_files(tmp_path_factory.mktemp("toy-data"))


@pytest.fixture
def toy_cls_files(tmp_path: Path) -> dict[str, Path]:
    return toy_sentiment_files(tmp_path / "data", 256, 64)


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` run where CUDA is available and are skipped, saying why, elsewhere."""
    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (marked gpu)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


# Nothing in the tests may come from a model hub: fail fast instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# transformers binds its log handler to the sys.stderr of the moment it is first used; make that
# the session-wide stream now, not the per-test capture of whichever test came first.
from transformers.utils import logging as _hf_logging  # noqa: E402

_hf_logging.get_logger("transformers")
