"""Any checkpoint, no family file: the architecture matrix (model types x tasks).

For each of ~19 transformers architectures a tiny random-init model is built from the model
type's own config class with a tokenizer trained on the fly and saved with save_pretrained; ft then
meets it as a plain checkpoint (`model.name=auto`, nothing declared about it). For every registered
task the architecture serves (transformers' auto tables say which), ft's own pieces run: task data
through the task's tokenizer and collator, build_model (config.json + meta-device checks, loading,
peft's default target modules or the linear layers it finds, the new task head trained in full),
and two LoRA steps that change the adapter and nothing else. Every pair it does not serve is
refused by `ft validate`'s checks with one line naming what the architecture does serve.

Lean by design: one tiny model per architecture for the session, 4 training rows per case, two
optimizer steps, no subprocesses.
"""

from __future__ import annotations

import copy
import os
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from framework.core.errors import UserError
from framework.core.plugins import load_all
from framework.core.registry import MODELS, PEFT_METHODS, TASKS
from tests.helpers import REPO

load_all()

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

ARCHITECTURES = [
    # decoders
    "llama",
    "qwen2",
    "qwen3",
    "mistral",
    "gemma",
    "gemma2",
    "gemma3_text",
    "phi3",
    "phi",
    "gpt2",
    # encoders
    "bert",
    "roberta",
    "deberta-v2",
    "distilbert",
    "modernbert",
    "xlm-roberta",
    "electra",
    # encoder-decoders
    "t5",
    "bart",
]
ROWS = 4  # training rows per case
STEPS = 2


def _task_recipes() -> dict[str, str]:
    """task -> the shipped tiny recipe that trains it (its data source and settings)."""
    import yaml

    found: dict[str, str] = {}
    for path in sorted((REPO / "recipes").glob("*tiny*.yaml")):
        defaults = {
            k: v
            for item in yaml.safe_load(path.read_text())["defaults"]
            if isinstance(item, dict)
            for k, v in item.items()
        }
        found.setdefault(defaults["task"], path.stem)
    return found


def _auto_node(model_type: str) -> dict[str, Any]:
    return {"name": "auto", "random_init": {"model_type": model_type}}


def _supported(model_type: str, task: str) -> bool:
    return MODELS.get("auto").unsupported(task, {"model_type": model_type}) is None


CASES: list[tuple[str, str]] = [(m, t) for m in ARCHITECTURES for t in TASKS.names()]
TRAINED = [(m, t) for m, t in CASES if _supported(m, t)]
REFUSED = [(m, t) for m, t in CASES if not _supported(m, t)]


class TaskData:
    """A task's composed run (from its tiny recipe) and its raw splits, loaded once."""

    def __init__(self, task: str):
        from framework.config.path import load_run
        from framework.data.loading import load_raw_splits

        small = ["data.max_train_examples=16", "data.max_eval_examples=4", "data.max_length=64"]
        if task == "question_ans":
            small.append("task.doc_stride=16")  # under half of max_length
        self.run = load_run(_task_recipes()[task], small)
        raw = load_raw_splits(self.run.plugins.source, self.run.data, self.run.data_source)
        self.raw = raw
        self.train = raw.splits["train"].select(range(ROWS))

    def run_for(self, model_type: str) -> Any:
        """The same run with the model replaced by a tiny `model_type` checkpoint (validated)."""
        from framework.config.schema import build_run_config

        node = copy.deepcopy(self.run.raw)
        node["model"] = _auto_node(model_type)
        return build_run_config(node, self.run.origin)


@pytest.fixture(scope="session")
def task_data():
    cache: dict[str, TaskData] = {}

    def get(task: str) -> TaskData:
        if task not in cache:
            cache[task] = TaskData(task)
        return cache[task]

    return get


def test_the_matrix_covers_every_kind_and_task() -> None:
    kinds = {next(iter(MODELS.get("auto").traits({"model_type": m}) - {m})) for m in ARCHITECTURES}
    assert kinds == {"decoder", "encoder", "seq2seq"}
    assert {t for _, t in TRAINED} == set(TASKS.names())
    assert len(TRAINED) >= 60 and REFUSED, (len(TRAINED), len(REFUSED))


@pytest.mark.parametrize("model_type,task", TRAINED, ids=[f"{m}-{t}" for m, t in TRAINED])
def test_lora_trains_every_served_task(model_type: str, task: str, task_data) -> None:
    import torch

    from framework.core.registry import HARDWARE
    from framework.models.loading import load_tokenizer, resolve_checkpoint
    from framework.objectives.base import ObjectiveContext, reference_context
    from framework.training.model import build_model
    from framework.training.speed import choose_fast_paths

    data = task_data(task)
    run = data.run_for(model_type)
    family = MODELS.get("auto")
    checkpoint = resolve_checkpoint(run.plugins.family, run.model)
    tokenizer = load_tokenizer(run.plugins.family, run.model, checkpoint)
    task_obj = TASKS.get(task)(run.task, run.data, tokenizer, family)
    objective = run.plugins.objective(run.objective, task_obj)  # the loss, as the trainer asks
    task_obj.use_objective(objective, run.train)
    splits = {"train": data.train}
    task_obj.check_columns(splits, data.raw.describe)
    task_obj.fit_labels({"train": data.raw.splits["train"]}, data.raw.describe)
    tokenized = task_obj.tokenize(splits)["train"]
    assert len(tokenized) > 0
    torch.manual_seed(0)
    model = build_model(
        run, checkpoint, task_obj, HARDWARE.get("cpu"), PEFT_METHODS.get("lora"), family
    )
    # causal LM: packed rows and logits only at labels, where this architecture takes them
    fast = choose_fast_paths(
        run, task_obj, model, PEFT_METHODS.get("lora"), HARDWARE.get("cpu"), False
    )
    task_obj.use_fast_paths(fast)
    if task_obj.packed:  # packed rows attend per example on SDPA (gemma2 runs eager: soft-capping)
        assert fast.attention == ("eager" if model_type == "gemma2" else "sdpa per example"), fast
        assert task_obj.packed_lengths == (fast.attention == "sdpa per example")
    batch = task_obj.collate([tokenized[i] for i in range(len(tokenized))])
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert any("lora_" in n for n in trainable), sorted(trainable)[:5]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    unwrapped = SimpleNamespace(unwrap_model=lambda wrapped: wrapped)  # no Accelerate wrapping
    context = ObjectiveContext(
        model, unwrapped, reference_context(model, None), logits_only=fast.logits_only
    )
    for _ in range(STEPS):
        summed, count, _ = objective.loss_terms(context, batch)
        loss = summed / count
        assert torch.isfinite(loss), loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    params = dict(model.named_parameters())
    assert any(
        not torch.equal(params[n], before) for n, before in trainable.items() if "lora_B" in n
    ), "the LoRA B matrices did not move"
    assert all(torch.equal(params[n], before) for n, before in frozen.items()), (
        "a base weight moved"
    )


@pytest.mark.parametrize("model_type,task", REFUSED, ids=[f"{m}-{t}" for m, t in REFUSED])
def test_unserved_task_is_refused_at_validation(model_type: str, task: str, task_data) -> None:
    served = MODELS.get("auto").served_tasks({"model_type": model_type})
    with pytest.raises(
        UserError,
        match=rf"task={task} with model type '{model_type}': not "
        rf"supported \(.*\); it serves: {', '.join(served)}",
    ):
        task_data(task).run_for(model_type)


def test_train_time_check_refuses_before_reading_weights(tmp_path, task_data) -> None:
    """A hub id is not readable at validation (no download there); at train time config.json is
    read and the task checked on the meta device before any weight: a tiny T5 checkpoint with no
    weights file at all still gets the one-line refusal, not a load error."""
    import shutil

    from framework.config.checks import model_problems
    from framework.models.loading import resolve_checkpoint
    from framework.models.skeleton import check_before_loading

    run = task_data("causal_lm").run_for("llama")
    source = resolve_checkpoint(
        run.plugins.family,
        type(run.model)(name="auto", random_init=type(run.model.random_init)(model_type="t5")),
    )
    bare = tmp_path / "t5-config-only"
    bare.mkdir()
    shutil.copy(f"{source}/config.json", bare / "config.json")  # no weights, no tokenizer
    task_obj = TASKS.get("causal_lm")(run.task, run.data, None, MODELS.get("auto"))
    family = MODELS.get("auto")
    with pytest.raises(
        UserError,
        match=r"\(t5\): task=causal_lm with model type 't5': not "
        r"supported \(causal_lm needs a decoder model",
    ):
        check_before_loading(
            run,
            str(bare),
            task_obj,
            PEFT_METHODS.get("lora"),
            family,
            problems_for=lambda config: model_problems(run, family, config),
        )


def test_missing_target_module_is_named_before_loading(task_data) -> None:
    from dataclasses import replace

    from framework.config.checks import model_problems
    from framework.models.loading import resolve_checkpoint
    from framework.models.skeleton import check_before_loading

    run = task_data("seq_cls").run_for("qwen2")
    run = replace(run, peft=replace(run.peft, target_modules=["q_proj", "query"]))
    task_obj = TASKS.get("seq_cls")(run.task, run.data, None, MODELS.get("auto"))
    task_obj.fit_labels(task_data("seq_cls").raw.splits, task_data("seq_cls").raw.describe)
    family = MODELS.get("auto")
    with pytest.raises(
        UserError,
        match=r"peft.target_modules=\['q_proj', 'query'\]: query matched "
        r"no module of Qwen2ForSequenceClassification\. Its linear "
        r"layers are: .*down_proj.*q_proj",
    ):
        check_before_loading(
            run,
            resolve_checkpoint(run.plugins.family, run.model),
            task_obj,
            PEFT_METHODS.get("lora"),
            family,
            problems_for=lambda config: model_problems(run, family, config),
        )


def test_defaults_come_from_peft_then_the_meta_device() -> None:
    """peft's table where it has the model type; otherwise every linear layer name of the backbone
    (DistilBERT: q_lin ...; Phi-3: fused qkv_proj), found without weights; task heads that peft
    would leave frozen are trained in full."""
    from transformers import AutoConfig

    auto = MODELS.get("auto")
    assert auto.default_targets("lora", AutoConfig.for_model("qwen2"), "LORA") == [
        "q_proj",
        "v_proj",
    ]
    distil = auto.default_targets("lora", AutoConfig.for_model("distilbert"), "LORA")
    assert {"q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"} <= set(distil)
    phi3 = auto.default_targets("lora", AutoConfig.for_model("phi3", num_hidden_layers=1), "LORA")
    assert "qkv_proj" in phi3 and "lm_head" not in phi3
    assert auto.head_modules("seq_cls", AutoConfig.for_model("distilbert")) == [
        "pre_classifier",
        "classifier",
    ]
    assert auto.head_modules("seq_cls", AutoConfig.for_model("t5")) == ["classification_head"]
    assert auto.head_modules("causal_lm", AutoConfig.for_model("llama", num_hidden_layers=1)) == []


def test_validate_reads_config_json_without_torch(tmp_path: Path) -> None:
    """`model=auto model.checkpoint=DIR` alone: validation reads DIR/config.json (or a hub id's, when
    it is already in the local hub cache) and refuses an unserved task with what the model serves,
    without importing torch."""
    import json
    import subprocess
    import sys

    from framework.core.plugins import load_all
    from framework.core.registry import MODELS
    from framework.models.loading import resolve_checkpoint
    from framework.models.params import ModelParams, TinySpec

    load_all()
    t5_dir = resolve_checkpoint(
        MODELS.get("auto"), ModelParams(name="auto", random_init=TinySpec(model_type="t5"))
    )
    snapshot = tmp_path / "hub" / "models--someone--tiny-bart" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(
        json.dumps({"model_type": "bart", "is_encoder_decoder": True})
    )
    (tmp_path / "hub" / "models--someone--tiny-bart" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-bart" / "refs" / "main").write_text("abc123")
    code = textwrap.dedent(f"""
        import sys
        from framework.core.errors import UserError
        from framework.config.path import load_run
        for checkpoint, task in (({t5_dir!r}, "causal_lm"), ("someone/tiny-bart", "token_cls")):
            try:
                load_run("sft_tiny_llama_lora", ["model=auto", f"model.checkpoint={{checkpoint}}",
                                                             f"task={{task}}"])
            except UserError as error:
                print(error)
        load_run("seq2seq_tiny_t5_lora", ["model=auto", "model.checkpoint={t5_dir}"])
        print("torch imported" if "torch" in sys.modules else "torch not imported")
        """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_CACHE": str(tmp_path / "hub")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    out = result.stdout
    assert (
        "task=causal_lm with model type 't5': not supported (causal_lm needs a decoder model "
        "and 't5' is a seq2seq model); it serves: feature_extraction, question_ans, reward_model, "
        "seq2seq_lm, seq_cls, token_cls"
    ) in out, out + result.stderr
    assert (
        "task=token_cls with model type 'bart': not supported (transformers has no "
        "AutoModelForTokenClassification class for model type 'bart')"
    ) in out, out
    assert out.strip().endswith("torch not imported"), out + result.stderr
