"""Each PEFT method's answer to identity_at_init (what a reference-based objective relies on)
against the model itself: on a tiny Llama, a fresh adapter's outputs equal the base's with the
adapter disabled exactly when the method says so."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from framework.core.plugins import load_all
from framework.core.registry import PEFT_METHODS
from tests.helpers import method_params
from tests.peft.test_every_method import TaskSetup, presets

load_all()
pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]

# Presets with their default params, plus the params that change a method's answer.
# lora_modules_to_save names BERT's modules: it is LoRA, covered by the lora cases.
CASES = [(preset, {}) for preset in presets() if preset != "lora_modules_to_save"] + [
    ("lora", {"init": False}),
    ("lora", {"init": "gaussian"}),
    ("ia3", {"init_weights": False}),
]
TOLERANCE = 1e-5  # HRA's Householder product is the identity up to float rounding (4e-7)


@pytest.fixture(scope="module")
def setup() -> Any:
    return TaskSetup("causal_lm", "llama", Path(tempfile.mkdtemp()))


@pytest.mark.parametrize(
    "preset,changed", CASES, ids=[f"{p}-{'-'.join(map(str, c.values()))}" for p, c in CASES]
)
def test_identity_at_init_is_what_the_model_does(setup: Any, preset: str, changed: dict) -> None:
    import torch
    from peft import get_peft_model

    node = presets()[preset]
    method = PEFT_METHODS.get(node["name"])
    if method.incompatibility("causal_lm", "llama"):
        pytest.skip(f"{preset} does not serve causal_lm on llama")
    params = method_params(node["name"], preset, **changed)
    torch.manual_seed(0)
    model = get_peft_model(
        setup.base(), method.build(params, "causal_lm", setup.family, setup._base.config)
    ).eval()
    batch = {k: v for k, v in setup.batch.items() if k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        adapted = model(**batch).logits
        with model.disable_adapter():
            disabled = model(**batch).logits
    differs = float((adapted[:, -disabled.shape[1] :] - disabled).abs().max()) > TOLERANCE
    assert differs == (not method.identity_at_init(params)), method.not_identity_at_init(params)
