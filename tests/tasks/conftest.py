"""Fixtures of the task tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def base_tokenizer():
    """The tiny Llama's byte-level BPE tokenizer (trained on the fly, built once)."""
    from framework.core.plugins import load_all
    from framework.core.registry import MODELS
    from framework.models.loading import load_tokenizer, resolve_checkpoint
    from framework.models.params import ModelParams, TinySpec

    load_all()
    family, params = MODELS.get("llama"), ModelParams(name="llama", random_init=TinySpec())
    return load_tokenizer(family, params, resolve_checkpoint(family, params))
