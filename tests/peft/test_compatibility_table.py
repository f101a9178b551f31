"""The method x task x model compatibility table, checked against the installed peft.

The models are the tiny random models of ft's families (llama, gpt2, bert, t5, bart, bert2bert),
one per architecture ft overrides; tests/models/test_any_architecture.py covers ~19 architectures with LoRA.
Every (model, task) pair the architecture serves (transformers' tables, plus the family's own
holes) is run: a base model that cannot run such a pair fails the test, it is not skipped. Every
combination a registered method claims to support is wrapped with peft through ft's build path,
run forward and backward (gradients reach only trainable parameters) and stepped once (the outputs
change); saving and reloading is checked per method x task by tests/peft/test_every_method.py. Every
combination the table excludes either fails inside peft with the exception it declares (class and
message) or names a fact test below that demonstrates why ft refuses it. Choices the table
excludes are refused at validation, before any model is loaded, with the reason.
"""

from __future__ import annotations

import builtins
import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from framework.core.errors import UserError
from framework.core.plugins import load_all
from framework.core.registry import MODELS, PEFT_METHODS, TASKS
from tests.helpers import REPO, ft_cli, method_params, tiny_presets

load_all()


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one intra-op thread

CONF = REPO / "conf"
NUM_LABELS = 3
SEQ = 10


# ---- helpers shared with tests/peft/test_every_method.py ------------------------------------------
_BASES: dict[tuple[str, str], Any] = {}


def pristine_base(family: str, task: str) -> Any:
    """A fresh copy of the tiny base model of `family` loaded for `task` (cached per process)."""
    key = (family, task)
    if key not in _BASES:
        import torch

        from framework.config.typecheck import check_dataclass
        from framework.models.loading import load_model, resolve_checkpoint

        preset = tiny_presets()[family]
        node = yaml.safe_load((CONF / "model" / f"{preset}.yaml").read_text())
        problems: list[str] = []
        params = check_dataclass(MODELS.get(family).Params, node, "model", str, problems)
        assert not problems, problems
        kwargs = {"num_labels": NUM_LABELS} if task in ("seq_cls", "token_cls") else {}
        torch.manual_seed(0)  # new heads (classifier, qa_outputs) get the same init every time
        model = load_model(
            MODELS.get(family),
            params,
            resolve_checkpoint(MODELS.get(family), params),
            TASKS.get(task).auto_model,
            kwargs,
            {"dtype": torch.float32},
        )
        _BASES[key] = model.eval()
    return copy.deepcopy(_BASES[key])


def synthetic_batch(model: Any, task: str, pad_last: int = 0) -> dict[str, Any]:
    """A 2-row batch for `task` with ids that avoid special tokens; encoder-decoder classifiers
    get one <eos> per row, as their tokenizers add. pad_last right-pads row 1 by that many."""
    import torch

    config = model.config
    vocab = model.get_input_embeddings().num_embeddings
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, vocab, (2, SEQ), generator=generator)
    mask = torch.ones_like(ids)
    eos = getattr(config, "eos_token_id", None)
    if task == "seq_cls" and getattr(config, "is_encoder_decoder", False) and eos is not None:
        ids[ids == eos] = 11
        ids[:, -1] = eos
    if pad_last:
        pad = config.pad_token_id if config.pad_token_id is not None else 0
        ids[1, -pad_last:] = pad
        mask[1, -pad_last:] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    if task == "causal_lm":
        batch["labels"] = ids.masked_fill(mask == 0, -100)
    elif task == "seq_cls":
        batch["labels"] = torch.tensor([0, 2])
    elif task == "token_cls":
        batch["labels"] = torch.randint(0, NUM_LABELS, (2, SEQ), generator=generator)
    elif task == "question_ans":
        batch["start_positions"] = torch.tensor([1, 3])
        batch["end_positions"] = torch.tensor([2, 5])
    elif task == "seq2seq_lm":
        batch["labels"] = torch.randint(10, vocab, (2, 6), generator=generator)
    return batch


LABEL_KEYS = ("labels", "start_positions", "end_positions")


def loss_of(task: str, out: Any) -> Any:
    """The model's loss, or for feature extraction (no head) a stand-in on the hidden states: their
    projection on a fixed random direction (a norm would be constant after a final LayerNorm)."""
    import torch

    if task != "feature_extraction":
        return out.loss
    states = out.last_hidden_state
    direction = torch.randn(states.shape[-1], generator=torch.Generator().manual_seed(1))
    return (states * direction).mean()


def outputs(model: Any, task: str, batch: dict[str, Any]) -> Any:
    """What a user reads from the model, computed without labels (logits, spans, states)."""
    import torch

    inputs = {k: v for k, v in batch.items() if k not in LABEL_KEYS}
    if task == "seq2seq_lm":
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        inputs["decoder_input_ids"] = base.prepare_decoder_input_ids_from_labels(batch["labels"])
    with torch.no_grad():
        out = model(**inputs)
    if task == "feature_extraction":
        return out.last_hidden_state
    if task == "question_ans":
        return torch.cat([out.start_logits, out.end_logits], dim=-1)
    return out.logits


def wrap(
    method_name: str, family: str, task: str, params: Any = None, total_steps: int = 10
) -> Any:
    """Base model + the method through ft's own path: method.build -> get_peft_model ->
    method.prepare_model (what runner.apply_peft and the runner do)."""
    from peft import get_peft_model

    method = PEFT_METHODS.get(method_name)
    params = params if params is not None else method_params(method_name)
    base = pristine_base(family, task)
    model = get_peft_model(base, method.build(params, task, MODELS.get(family), base.config))
    method.prepare_model(params, model, total_steps)
    return model


def pairs() -> list[tuple[str, str]]:
    """(family, task) pairs a tiny model exists for and the architecture serves."""
    tiny = tiny_presets()
    return [
        (f, t)
        for f in MODELS.names()
        if f in tiny
        for t in TASKS.names()
        # A task trained by an objective (preference, reward_model) loads the model class of
        # causal_lm / seq_cls, whose rows state its claims; tests/models/test_any_architecture.py
        # and tests/peft/test_every_method.py train it through its objective.
        if "task" in TASKS.get(t).data_kinds and MODELS.get(f).unsupported(t) is None
    ]


CPU_METHODS = [m for m in PEFT_METHODS.names() if not PEFT_METHODS.get(m).needs_cuda]
MATRIX = [(m, f, t) for m in CPU_METHODS for f, t in pairs()]


def exclusion_of(method_name: str, task: str, family: str) -> Any:
    from framework.peft.base import model_traits

    method = PEFT_METHODS.get(method_name)
    for rule in method.exclusions:
        if rule.matches(task, model_traits(family)):
            return rule
    return None


# ---- the matrix ----------------------------------------------------------------------------
def declared_error(method_name: str, family: str, rule: Any) -> tuple[tuple[type, ...], str]:
    """The exception classes and message regex peft raises, as declared: by the method's
    model-type limit when the model is outside it (peft checks that first), else by the rule."""
    from framework.peft.base import model_traits

    method = PEFT_METHODS.get(method_name)
    if rule is None or (method.model_types and not method.model_types & model_traits(family)):
        names, match = method.model_type_error[:1], method.model_type_error[1]
    else:
        names, match = rule.errors, rule.match
    assert names and match, f"{method_name}: a peft failure without its declared error"
    return tuple(getattr(builtins, name) for name in names), match


@pytest.mark.parametrize("family,task", pairs(), ids=["-".join(c) for c in pairs()])
def test_every_served_pair_runs_without_peft(family: str, task: str) -> None:
    """The base of every pair the matrix probes runs its task (a failure here is a bug, never a
    reason to skip): e.g. T5 embeddings use the encoder alone (T5EncoderModel)."""
    import torch

    model = pristine_base(family, task)
    loss = loss_of(task, model(**synthetic_batch(model, task)))
    assert torch.isfinite(loss), loss
    if (family, task) == ("t5", "feature_extraction"):
        assert type(model).__name__ == "T5EncoderModel"


@pytest.mark.slow
@pytest.mark.parametrize("method_name,family,task", MATRIX, ids=["-".join(c) for c in MATRIX])
def test_compatibility_claim_holds_in_peft(method_name: str, family: str, task: str) -> None:
    import torch

    method = PEFT_METHODS.get(method_name)
    reason = method.incompatibility(task, family)
    rule = exclusion_of(method_name, task, family)

    def attempt() -> Any:
        model = wrap(method_name, family, task)
        model.train()
        batch = synthetic_batch(model, task)
        loss = loss_of(task, model(**batch))
        loss.backward()
        return model, batch

    if reason is not None and (rule is None or rule.peft_fails):
        errors, match = declared_error(method_name, family, rule)
        with pytest.raises(errors, match=match):
            attempt()
        return
    if reason is not None:
        assert rule.fact and rule.fact in globals(), f"{method_name}: exclusion without a fact test"
        return

    model, batch = attempt()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with_grad = {
        n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0
    }
    assert with_grad, "no adapter parameter received a gradient"
    assert with_grad <= trainable, (
        f"frozen parameters got gradients: {sorted(with_grad - trainable)[:5]}"
    )
    before = outputs(model.eval(), task, batch)
    torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2).step()
    assert not torch.allclose(outputs(model, task, batch), before), "a step changed nothing"
    # Saving and reloading in plain peft is checked per method x task on the representative
    # family by tests/peft/test_every_method.py (with the real tasks); here the claim is "it runs".


# ---- facts behind the exclusions where peft runs but the result is wrong ----------------------
def test_fact_decoder_seq_cls_reads_padding_with_prompts() -> None:
    """Decoder-only classifiers pick the last real token from input_ids; with prompt tuning they
    get inputs_embeds and read the last position, so a padded row's logits change with padding."""
    import torch

    def padded_vs_alone(method_name: str) -> tuple[Any, Any]:
        model = wrap(method_name, "llama", "seq_cls").eval()
        batch = synthetic_batch(model, "seq_cls", pad_last=3)
        in_batch = outputs(model, "seq_cls", batch)[1]
        alone = {
            "input_ids": batch["input_ids"][1:, :-3],
            "attention_mask": batch["attention_mask"][1:, :-3],
        }
        return in_batch, outputs(model, "seq_cls", alone)[0]

    torch.testing.assert_close(*padded_vs_alone("lora"), rtol=1e-4, atol=1e-5)  # control
    for method_name in ("prompt_tuning", "p_tuning"):
        in_batch, alone = padded_vs_alone(method_name)
        assert not torch.allclose(in_batch, alone, atol=1e-4), method_name


def test_fact_qa_logits_include_virtual_tokens() -> None:
    """With soft prompts the QA logits cover num_virtual_tokens extra leading positions, while
    start/end positions still index the real tokens: spans would be shifted."""
    for method_name in ("prompt_tuning", "p_tuning"):
        model = wrap(method_name, "bert", "question_ans").eval()
        batch = synthetic_batch(model, "question_ans")
        spans = outputs(model, "question_ans", batch)
        n = model.peft_config["default"].num_virtual_tokens
        assert spans.shape[-1] == 2 * (SEQ + n), method_name


def test_fact_hidden_states_include_virtual_tokens() -> None:
    """Soft prompts add num_virtual_tokens positions to the hidden states that ft pools over with
    the input's attention mask (one entry per real token)."""
    for method_name in ("prompt_tuning", "p_tuning"):
        model = wrap(method_name, "bert", "feature_extraction").eval()
        batch = synthetic_batch(model, "feature_extraction")
        states = outputs(model, "feature_extraction", batch)
        n = model.peft_config["default"].num_virtual_tokens
        assert states.shape[1] == SEQ + n != batch["attention_mask"].shape[1], method_name


def test_fact_adaption_prompt_leaves_the_new_head_untrained(tmp_path: Path) -> None:
    """The sequence-classification head is new and random; LoRA trains and saves it (peft's
    modules_to_save), adaption prompt can do neither."""
    for method_name, trained in (("lora", True), ("adaption_prompt", False)):
        model = wrap(method_name, "llama", "seq_cls")
        head = [p.requires_grad for n, p in model.named_parameters() if ".score." in n]
        assert any(head) is trained, method_name
        model.save_pretrained(str(tmp_path / method_name))
        from safetensors.torch import load_file

        saved = load_file(str(tmp_path / method_name / "adapter_model.safetensors"))
        assert any("score" in k for k in saved) is trained, method_name


def test_every_soft_exclusion_names_a_fact_test() -> None:
    for name in PEFT_METHODS.names():
        for rule in PEFT_METHODS.get(name).exclusions:
            assert rule.reason, name
            if not rule.peft_fails:
                assert rule.fact in globals() and rule.fact.startswith("test_fact_"), (name, rule)
            else:
                assert (
                    rule.errors
                    and all(isinstance(getattr(builtins, e, None), type) for e in rule.errors)
                    and rule.match
                ), (name, rule)


def test_adaption_prompt_model_types_are_peft_s_own() -> None:
    """ft's declared model types for adaption prompt are exactly those peft implements."""
    from peft.tuners.adaption_prompt.config import TRANSFORMERS_MODEL_CONFIG

    assert PEFT_METHODS.get("adaption_prompt").model_types == set(TRANSFORMERS_MODEL_CONFIG)


# ---- the registry against peft, presets, validation ----------------------------------------
def test_every_method_builds_its_own_peft_config_type() -> None:
    from peft import PeftType
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    for name in PEFT_METHODS.names():
        method = PEFT_METHODS.get(name)
        peft_type = PeftType[method.peft_type]
        family, task = next((f, t) for f, t in pairs() if method.incompatibility(t, f) is None)
        config = method.build(method_params(name), task, MODELS.get(family), _config_of(family))
        assert isinstance(config, PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]), name
        assert method.summary and method.Params.__doc__ is not None, name


def _config_of(family: str) -> Any:
    import types

    return types.SimpleNamespace(name_or_path="checkpoint-dir", num_hidden_layers=2)


def test_every_method_has_a_preset_and_every_preset_validates() -> None:
    from framework.config.path import load_run

    presets = {
        p.stem: (yaml.safe_load(p.read_text()) or {}) for p in (CONF / "peft").glob("*.yaml")
    }
    assert set(PEFT_METHODS.names()) <= set(presets), "a registered method has no preset"
    recipe_of = {"bert": "seq_cls_tiny_bert_lora", "llama": "sft_tiny_llama_lora"}
    for preset, node in sorted(presets.items()):
        method = PEFT_METHODS.get(node["name"])
        family = "bert" if method.incompatibility("seq_cls", "bert") is None else "llama"
        if method.needs_cuda:
            continue  # test_gpu_only_methods_are_refused_without_cuda
        run = load_run(recipe_of[family], [f"peft={preset}", "output_root=/tmp/unused"])
        assert run.peft.name == node["name"]


@pytest.mark.skipif(
    __import__("tests.helpers").helpers.cuda_available(), reason="checks the no-CUDA refusal"
)
@pytest.mark.parametrize("preset", ["qlora", "loftq"])
def test_gpu_only_methods_are_refused_without_cuda(preset: str) -> None:
    from framework.config.path import load_run

    with pytest.raises(UserError, match="needs a CUDA GPU"):
        load_run("sft_tiny_llama_lora", [f"peft={preset}", "hardware=gpu"])


def test_incompatible_choice_is_refused_with_reason_before_torch_is_imported() -> None:
    code = (
        "import sys\n"
        "from framework.config.path import load_run\n"
        "from framework.core.errors import UserError\n"
        "for preset in ('adalora', 'prompt_tuning', 'pissa', 'ia3'):\n"
        "    load_run('seq_cls_tiny_bert_lora', [f'peft={preset}'])\n"
        "try:\n"
        "    load_run('seq_cls_tiny_bert_lora', ['peft=adaption_prompt'])\n"
        "except UserError as e:\n"
        "    print(e)\n"
        "print('torch imported' if 'torch' in sys.modules else 'torch not imported')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert (
        "adaption_prompt works only with model types gpt2, llama, mistral, not model type 'bert'"
    ) in result.stdout
    assert "torch not imported" in result.stdout, result.stdout + result.stderr


def test_cli_rejects_excluded_combination_with_the_reason() -> None:
    result = ft_cli("validate", "seq_cls_tiny_bert_lora", "peft=prefix_tuning")
    assert result.returncode == 2
    assert "past_key_values" in result.stderr + result.stdout


def test_list_peft_for_a_task_shows_only_what_works() -> None:
    result = ft_cli("list", "peft", "--task", "seq_cls")
    assert result.returncode == 0, result.stderr
    registered = result.stdout.split("registered")[1]
    lines = {line.split()[0]: line for line in registered.splitlines()[1:] if line.strip()}
    assert "lora" in lines and "adalora" in lines
    assert "prefix_tuning" not in lines  # no model's classifier takes past_key_values
    assert "models: encoder;" in lines["prompt_tuning"]  # decoders read padding, seq2seq refuse
    presets = [
        line.split()[0]
        for line in result.stdout.split("registered")[0].splitlines()
        if "->" in line
    ]
    assert "lora" in presets and "dora" in presets and "prompt_tuning" in presets
    assert "prefix_tuning" not in presets and "adaption_prompt" not in presets


def test_target_modules_that_match_nothing_list_the_linear_layers() -> None:
    from types import SimpleNamespace

    from framework.training.model import apply_peft

    for name in CPU_METHODS:
        method = PEFT_METHODS.get(name)
        if method.target_kind is None:
            continue
        params = method_params(name, target_modules=["no_such_layer"])
        run = SimpleNamespace(peft=params, task=SimpleNamespace(name="seq_cls"))
        with pytest.raises(UserError) as error:
            apply_peft(run, pristine_base("bert", "seq_cls"), method, MODELS.get("bert"))
        assert "no_such_layer" in str(error.value) and "query" in str(error.value), name


def test_unknown_modules_to_save_are_reported() -> None:
    params = method_params("lora", modules_to_save=["poooler"])
    with pytest.raises(UserError, match="poooler.*pooler"):
        wrap("lora", "bert", "seq_cls", params)


def test_t5_and_bart_classification_heads_are_trained() -> None:
    for family in ("t5", "bart"):
        model = wrap("lora", family, "seq_cls")
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        assert any("classification_head.modules_to_save" in n for n in trainable), family


def test_olora_on_gpt2_is_refused_and_peft_indeed_fails() -> None:
    from framework.config.path import load_run

    with pytest.raises(UserError, match="OLoRA init breaks"):
        load_run("sft_tiny_llama_lora", ["peft=olora", "model=tiny_gpt2"])
    model = wrap("lora", "gpt2", "causal_lm", method_params("lora", "olora"))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        model(**synthetic_batch(model, "causal_lm"))


def test_all_linear_targets_every_linear_but_the_head() -> None:
    """target_modules=all-linear (peft's shortcut) overrides the family default."""
    model = wrap("lora", "bert", "seq_cls", method_params("lora", target_modules="all-linear"))
    adapted = {
        n.split(".lora_A")[0].split(".")[-1] for n, _ in model.named_parameters() if "lora_A" in n
    }
    assert {"query", "key", "value", "dense"} <= adapted  # 'dense' includes the pooler here
    assert "classifier" not in adapted
