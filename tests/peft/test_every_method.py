"""Every PEFT preset x every task it claims, on tiny models, through ft's own pieces (the task's
tokenization, collation and loss; method.build -> get_peft_model -> prepare_model; the method's
optimizer groups, on_step hook and save path). For each: a few steps run; only adapter (and
modules_to_save) parameters get gradients and change; the base weights stay byte-identical; the
loss falls; the saved adapter reloads with plain AutoModelFor*.from_pretrained +
PeftModel.from_pretrained and gives the same outputs. Plus full `train_recipe` runs: AdaLoRA's
rank reallocation, PiSSA's converted adapter, `ft merge`.

New tasks and presets are picked up by themselves: tasks come from TASKS and the recipes that
train them on a tiny model, presets from conf/peft/.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from framework.core.errors import UserError
from framework.core.plugins import load_all
from framework.core.registry import MODELS, PEFT_METHODS, TASKS
from tests.helpers import REPO, ft_cli, method_params, train_recipe

load_all()


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one intra-op thread

STEPS = 6  # optimizer steps per case: enough for AdaLoRA's three phases and a falling loss
LR = 1e-2  # Adam on one fixed batch of a tiny model: every method's loss falls at this rate
LR_OF = {
    "prompt_tuning": 3e-2,
    "p_tuning": 3e-2,
    "prefix_tuning": 3e-2,  # soft prompts learn slowly
    # larger effective steps: B at 16x lr (LoRA+), scale 16/sqrt(32) at r=32 (rsLoRA),
    # WaveFT's scaling 25, RandLoRA's full-rank random bases: at 1e-2 (3e-3 for feature
    # extraction's contrastive loss) their loss rose within 6 steps on some tasks
    "lora_plus": 1e-3,
    "waveft": 1e-3,
    "randlora": 3e-3,
}
LR_OF_PRESET = {"rslora": 3e-3}
# Presets written for one family's module names, and the tasks they are meant for.
PRESET_TASKS = {"lora_modules_to_save": {"seq_cls"}}
FAMILY_ORDER = ["bert", "llama", "t5", "bart", "gpt2", "bert2bert"]  # fallbacks, in this order


# ---- what to run ---------------------------------------------------------------------------
def _recipe_defaults(path: Path) -> dict[str, str]:
    node = yaml.safe_load(path.read_text()) or {}
    return {
        k: v for item in node.get("defaults", []) if isinstance(item, dict) for k, v in item.items()
    }


def task_recipes() -> dict[str, str]:
    """task -> a recipe that trains it on a tiny random-init model (first one alphabetically)."""
    tiny = set(_tiny_presets().values())
    found: dict[str, str] = {}
    for path in sorted((REPO / "recipes").glob("*.yaml")):
        defaults = _recipe_defaults(path)
        if defaults.get("model") in tiny and defaults.get("task") in TASKS:
            found.setdefault(defaults["task"], path.stem)
    return found


def _tiny_presets() -> dict[str, str]:
    from tests.helpers import tiny_presets

    return tiny_presets()


def presets() -> dict[str, dict]:
    """conf/peft presets ft can run on CPU: preset name -> its YAML."""
    found = {}
    for path in sorted((REPO / "conf" / "peft").glob("*.yaml")):
        node = yaml.safe_load(path.read_text())
        if not PEFT_METHODS.get(node["name"]).needs_cuda:
            found[path.stem] = node
    return found


def family_for(method_name: str, task: str, recipe: str) -> str | None:
    """The recipe's family if the method supports it for the task, else the first that does."""
    tiny = _tiny_presets()
    recipe_family = yaml.safe_load(
        (
            REPO
            / "conf"
            / "model"
            / f"{_recipe_defaults(REPO / 'recipes' / f'{recipe}.yaml')['model']}.yaml"
        ).read_text()
    )["name"]
    method = PEFT_METHODS.get(method_name)
    for family in [recipe_family] + FAMILY_ORDER:
        if (
            family in tiny
            and MODELS.get(family).unsupported(task) is None
            and method.incompatibility(task, family) is None
        ):
            return family
    return None


def cases() -> list[tuple[str, str]]:
    recipes = task_recipes()
    found = []
    for preset, node in presets().items():
        for task, recipe in sorted(recipes.items()):
            if task in PRESET_TASKS.get(preset, {task}) and family_for(node["name"], task, recipe):
                found.append((preset, task))
    return found


CASES = cases()


def test_every_registered_method_and_task_is_covered() -> None:
    """The table above is complete: each CPU method is run on each task it claims (on some family)."""
    covered = {(presets()[p]["name"], t) for p, t in CASES}
    recipes = task_recipes()
    for name in PEFT_METHODS.names():
        method = PEFT_METHODS.get(name)
        if method.needs_cuda:
            continue
        for task in set(method.tasks or TASKS.names()) & set(recipes):
            if any(
                method.incompatibility(task, f) is None and MODELS.get(f).unsupported(task) is None
                for f in _tiny_presets()
            ):
                assert (name, task) in covered, (name, task)
    assert {"seq_cls", "causal_lm"} <= set(recipes)


# ---- per task and family: data, batch, base model (built once) ------------------------------
class TaskSetup:
    """The run config, task, one collated batch and the base model of (task, family)."""

    def __init__(self, task_name: str, family: str, tmp: Path):
        import torch

        from framework.config.path import load_run
        from framework.data.loading import load_raw_splits
        from framework.models.loading import load_model, load_tokenizer, resolve_checkpoint

        recipe = task_recipes()[task_name]
        self.run = load_run(recipe, [f"model={_tiny_presets()[family]}", f"output_root={tmp}"])
        self.family = MODELS.get(family)
        self.checkpoint = resolve_checkpoint(self.run.plugins.family, self.run.model)
        tokenizer = load_tokenizer(self.run.plugins.family, self.run.model, self.checkpoint)
        self.task = TASKS.get(task_name)(self.run.task, self.run.data, tokenizer, self.family)
        self.objective = self.run.plugins.objective(self.run.objective, self.task)
        self.task.use_objective(self.objective, self.run.train)
        raw = load_raw_splits(self.run.plugins.source, self.run.data, self.run.data_source)
        self.task.check_columns(raw.splits, raw.describe)
        self.task.fit_labels(raw.splits, raw.describe)
        train = raw.splits["train"]
        tokenized = self.task.tokenize({"train": train.select(range(min(12, len(train))))})["train"]
        self.batch = self.task.collate([tokenized[i] for i in range(min(8, len(tokenized)))])
        torch.manual_seed(0)
        self._base = load_model(
            self.run.plugins.family,
            self.run.model,
            self.checkpoint,
            self.task.auto_model,
            self.task.model_kwargs(),
            {"dtype": torch.float32},
        ).eval()

    def base(self) -> Any:
        return copy.deepcopy(self._base)

    def plain_base(self) -> Any:
        """The base as a user outside ft loads it: AutoModelFor*.from_pretrained(checkpoint)."""
        import transformers

        auto = getattr(transformers, self.task.auto_model)
        return auto.from_pretrained(self.checkpoint, **self.task.model_kwargs()).eval()

    def outputs(self, model: Any) -> Any:
        """What the task reads from the model, computed without labels."""
        import torch

        with torch.no_grad():
            if self.task.auto_model == "AutoModel":  # feature extraction: pooled embeddings
                return self.task.embed_groups(model, self.batch)
            inputs = {
                k: v
                for k, v in self.batch.items()
                if k not in ("labels", "start_positions", "end_positions")
            }
            if self.task.auto_model == "AutoModelForSeq2SeqLM":
                base = model.get_base_model() if hasattr(model, "get_base_model") else model
                inputs["decoder_input_ids"] = base.prepare_decoder_input_ids_from_labels(
                    self.batch["labels"]
                )
            out = model(**inputs)
        if hasattr(out, "start_logits"):
            return torch.cat([out.start_logits, out.end_logits], dim=-1)
        return out.logits

    def loss(self, model: Any) -> Any:
        """The run's training loss, asked of its objective as the trainer asks it."""
        from types import SimpleNamespace

        from framework.objectives.base import ObjectiveContext, reference_context

        plain = SimpleNamespace(unwrap_model=lambda wrapped: wrapped)  # no Accelerate wrapping
        context = ObjectiveContext(model, plain, reference_context(model, None))
        summed, count, _ = self.objective.loss_terms(context, self.batch)
        return summed / count


_SETUPS: dict[tuple[str, str], TaskSetup] = {}


@pytest.fixture(scope="module")
def setups(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("setups")

    def get(task: str, family: str) -> TaskSetup:
        if (task, family) not in _SETUPS:
            _SETUPS[(task, family)] = TaskSetup(task, family, tmp)
        return _SETUPS[(task, family)]

    return get


def typed_params(preset: str) -> Any:
    return method_params(presets()[preset]["name"], preset)


# ---- the parametrized test -------------------------------------------------------------------
@pytest.mark.parametrize("preset,task", CASES, ids=[f"{p}-{t}" for p, t in CASES])
def test_preset_trains_only_its_adapter_and_reloads_in_plain_peft(
    preset: str, task: str, setups, tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel, get_peft_model

    method_name = presets()[preset]["name"]
    method = PEFT_METHODS.get(method_name)
    family = family_for(method_name, task, task_recipes()[task])
    setup = setups(task, family)
    params = typed_params(preset)
    base = setup.base()
    torch.manual_seed(0)
    model = get_peft_model(base, method.build(params, task, setup.family, base.config))
    method.prepare_model(params, model, STEPS)

    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing to train"
    adapter_marks = (
        ".default",
        "modules_to_save",
        "prompt_encoder",
        "adaption_prompt",
        "adaption_gate",
    )  # how peft names adapter (and saved-module) parameters
    assert all(any(mark in n for mark in adapter_marks) for n in trainable), sorted(trainable)[:5]
    model.eval()
    with torch.no_grad():
        loss_before = float(setup.loss(model))

    train = copy.copy(setup.run.train)
    train.lr = LR_OF_PRESET.get(preset, LR_OF.get(method_name, LR))
    optimizer = torch.optim.AdamW(method.param_groups(params, model, train), lr=train.lr)
    model.train()
    for step in range(1, STEPS + 1):
        loss = setup.loss(model)
        loss.backward()
        with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
        assert with_grad <= set(trainable), sorted(with_grad - set(trainable))[:5]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        method.on_step(model, step)  # same place as the runner: after step, before zero_grad
        optimizer.zero_grad()

    model.eval()
    with torch.no_grad():
        loss_after = float(setup.loss(model))
    assert loss_after < loss_before, f"loss {loss_before:.4f} -> {loss_after:.4f}"
    params_now = dict(model.named_parameters())
    for name, value in frozen.items():
        assert torch.equal(params_now[name], value), f"base weight {name} changed"
    unchanged = [
        n
        for n, v in trainable.items()
        if torch.equal(params_now[n], v)
        # AdaLoRA's singular values start at 0 and a layer pruned to rank 0 stays there
        and not (method_name == "adalora" and "lora_E" in n and not v.any())
        # Bradley-Terry sees only chosen - rejected scores: the score head's bias cancels and
        # gets an exact zero gradient
        and not (task == "reward_model" and n.endswith(".bias") and "modules_to_save" in n)
    ]
    assert not unchanged, f"trainable parameters that never changed: {unchanged[:5]}"

    expected = setup.outputs(model)
    method.save_adapter(params, model, str(tmp_path / "adapter"))
    reloaded = PeftModel.from_pretrained(setup.plain_base(), str(tmp_path / "adapter")).eval()
    torch.testing.assert_close(setup.outputs(reloaded), expected, rtol=1e-4, atol=1e-5)


# ---- optimizer groups, hooks, reload fix-ups --------------------------------------------------
def test_lora_plus_gives_b_matrices_a_higher_learning_rate(setups) -> None:
    from peft import get_peft_model

    setup = setups("seq_cls", "bert")
    for preset, ratio in (("lora_plus", 16.0), ("lora_plus", 4.0)):
        params = copy.copy(typed_params(preset))
        params.lr_ratio_b = ratio
        method = PEFT_METHODS.get(params.name)
        model = get_peft_model(setup.base(), method.build(params, "seq_cls", setup.family, None))
        train = copy.copy(setup.run.train)
        train.lr = 1e-3
        groups = method.param_groups(params, model, train)
        lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
        named = dict(model.named_parameters())
        b = [n for n in named if "lora_B" in n]
        a = [n for n in named if "lora_A" in n]
        assert b and all(lr_of[id(named[n])] == pytest.approx(1e-3 * ratio) for n in b), preset
        assert all(lr_of[id(named[n])] == pytest.approx(1e-3) for n in a), preset
        assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in named.values())


def test_the_lora_plus_ratio_has_one_home() -> None:
    """The LoRA+ ratio is a peft key of lora_plus only (not also a train key); LoRA+ takes every
    LoRA key, so DoRA+ is peft=lora_plus peft.use_dora=true."""
    from framework.config.path import load_run

    with pytest.raises(UserError, match=r"train\.lr_ratio_b"):
        load_run("seq_cls_tiny_bert_lora", ["peft=lora_plus", "train.lr_ratio_b=4"])
    run = load_run("seq_cls_tiny_bert_lora", ["peft=lora_plus", "peft.use_dora=true"])
    assert run.peft.use_dora and run.peft.lr_ratio_b == 16


def test_adalora_reloaded_for_evaluation_needs_after_load(setups, tmp_path: Path) -> None:
    """peft 0.21 bug: a reloaded AdaLoRA model crashes when asked for a loss; after_load fixes it."""
    import torch
    from peft import PeftModel, get_peft_model

    from framework.peft.base import after_load

    setup = setups("seq_cls", "bert")
    params = typed_params("adalora")
    method = PEFT_METHODS.get("adalora")
    model = get_peft_model(setup.base(), method.build(params, "seq_cls", setup.family, None))
    method.prepare_model(params, model, 10)
    model.save_pretrained(str(tmp_path / "ada"))
    reloaded = PeftModel.from_pretrained(setup.plain_base(), str(tmp_path / "ada"))
    with pytest.raises(AttributeError, match="trainable_adapter_name"):
        setup.loss(reloaded)
    assert torch.isfinite(setup.loss(after_load(reloaded)))


def test_adalora_refuses_runs_too_short_for_its_schedule() -> None:
    from framework.config.path import load_run

    with pytest.raises(UserError, match="too few for AdaLoRA"):
        load_run(
            "seq_cls_tiny_bert_lora",
            ["peft=adalora", "train.max_steps=3", "peft.tinit_ratio=0.5", "peft.tfinal_ratio=0.4"],
        )


def test_lora_refuses_loftq_init_and_unknown_inits() -> None:
    from framework.config.path import load_run

    with pytest.raises(UserError, match="use peft=loftq"):
        load_run("seq_cls_tiny_bert_lora", ["peft=lora", "peft.init=loftq"])
    with pytest.raises(UserError, match="unknown LoRA init"):
        load_run("seq_cls_tiny_bert_lora", ["peft=lora", "peft.init=pisa"])
    with pytest.raises(UserError, match="ZeRO-3/FSDP keep sharded"):  # PiSSA's save conversion
        load_run("sft_tiny_llama_lora", ["peft=pissa", "hardware=zero3"])


# ---- full runs through the runner ------------------------------------------------------------
@pytest.mark.slow
def test_adalora_reallocates_ranks_during_a_real_run(tmp_path: Path) -> None:
    """Through the runner (its on_step hook must sit between optimizer.step and zero_grad):
    ranks start at init_r everywhere and end at a budget of target_r per layer, unevenly spread."""
    run_dir = train_recipe(
        "seq_cls_tiny_bert_lora",
        "peft=adalora",
        "train.max_steps=20",
        "train.log_every=5",
        output_root=tmp_path,
    )
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert config["total_step"] == 20 and config["tinit"] == 2 and config["tfinal"] == 4
    ranks = {name: sum(bool(x) for x in mask) for name, mask in config["rank_pattern"].items()}
    assert ranks and all(0 <= r <= config["init_r"] for r in ranks.values())
    assert sum(ranks.values()) == config["target_r"] * len(ranks)  # the final budget
    assert len(set(ranks.values())) > 1, f"every layer kept the same rank: {ranks}"


@pytest.mark.slow
def test_pissa_run_reloads_on_the_original_base_and_merges(tmp_path: Path) -> None:
    """PiSSA rewrites the base weights while training; ft saves the adapter converted to plain
    LoRA (rank 2r) with the classifier head kept, so a plain load of the untouched base + adapter
    reproduces the run's final evaluation, and `ft merge` matches the adapter's outputs."""
    import torch
    import transformers
    from peft import PeftModel

    from framework.commands.inference import evaluate_runs, merge_adapter

    run_dir = train_recipe(
        "seq_cls_tiny_bert_lora", "peft=pissa", "train.max_steps=15", output_root=tmp_path
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 16 and config["init_lora_weights"] is True  # converted to plain LoRA
    again = evaluate_runs([run_dir], "validation")[str(run_dir)]
    assert again["eval_loss"] == pytest.approx(summary["final"]["eval_loss"], rel=1e-4, abs=1e-5)
    assert again["accuracy"] == pytest.approx(summary["final"]["accuracy"])

    merged_dir = merge_adapter(run_dir)
    merged = transformers.AutoModelForSequenceClassification.from_pretrained(merged_dir).eval()
    from framework.commands.inference import load_trained

    _, task, adapter_model = load_trained(run_dir)
    batch = dict(
        task.tokenizer(["a fresh and funny film", "dull"], padding=True, return_tensors="pt")
    )
    with torch.no_grad():
        torch.testing.assert_close(
            merged(**batch).logits, adapter_model(**batch).logits, rtol=1e-4, atol=1e-5
        )
    assert not any("lora" in n for n, _ in merged.named_parameters())
    # And with nothing from ft: the base checkpoint the adapter names, plus the adapter.
    plain = PeftModel.from_pretrained(
        transformers.AutoModelForSequenceClassification.from_pretrained(
            adapter_model.peft_config["default"].base_model_name_or_path, num_labels=2
        ),
        str(run_dir / "adapter"),
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(**batch).logits, adapter_model(**batch).logits)


@pytest.mark.slow
def test_merge_refuses_methods_that_cannot_merge(tmp_path: Path) -> None:
    from framework.commands.inference import merge_adapter

    run_dir = train_recipe(
        "seq_cls_tiny_bert_lora", "peft=prompt_tuning", "train.max_steps=2", output_root=tmp_path
    )
    with pytest.raises(UserError, match="cannot be merged"):
        merge_adapter(run_dir)
    result = ft_cli("merge", str(run_dir))
    assert result.returncode == 2 and "prompt_tuning cannot be merged" in result.stderr
    assert not (run_dir / "merged").exists()


@pytest.mark.gpu
@pytest.mark.parametrize("preset", ["qlora", "loftq"])
def test_qlora_trains_on_a_gpu(preset: str, tmp_path: Path) -> None:
    import importlib.util
    import math

    assert importlib.util.find_spec("bitsandbytes"), (
        "bitsandbytes is missing: `make install` adds the qlora extra on a machine with nvidia-smi"
    )
    from framework.commands.inference import evaluate_runs

    run_dir = train_recipe(
        "sft_tiny_llama_lora",
        f"peft={preset}",
        "hardware=gpu",
        "train.max_steps=10",
        output_root=tmp_path,
    )
    losses = [
        r["loss"]
        for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        if r.get("split") == "train"
    ]
    assert losses and all(math.isfinite(loss) for loss in losses), losses
    assert "base weights: 4-bit (bitsandbytes)" in (run_dir / "train.log").read_text()
    assert "eval_loss" in evaluate_runs([run_dir], "validation")[str(run_dir)]
