"""`ft estimate RECIPE [overrides]`: peak memory per device of a run, before anything is loaded.

The model is built from its config.json on the meta device (no weight is read) and wrapped with
the run's PEFT method by the same builders `ft train` uses, so parameter counts are the real
adapter's. Memory is then arithmetic over those counts, the model's shape and the hardware
profile's MemoryLayout (sharding, offload, device_map):

  weights      base parameters in their load dtype (a quantizing method says its own bytes per
               parameter: 4-bit QLoRA ~0.52 B) + the trainable parameters (fp32: peft keeps
               adapters in fp32); divided by the shards under ZeRO-3/FSDP; one block when offloaded
  gradients    one per trainable parameter (fp32), + DDP's bucket copy; sharded from ZeRO-2
  optimizer    AdamW: 2 fp32 states per trainable parameter (8 B), SGD: momentum (4 B), + the
               fp32 master copy DeepSpeed keeps under 16-bit; sharded from ZeRO-1; 0 offloaded
  activations  what autograd saves for backward, per block and token (see block_elements), x
               layers x the micro-batch's tokens; with gradient checkpointing, each block's input
               plus one block recomputed at a time
  logits       models that output the vocabulary (causal/seq2seq LM), at the positions the LM
               head runs at (see lm_positions): 3 copies of [positions, vocabulary] in the
               compute dtype (the logits, and in backward the accumulated gradient of the chunks
               and the chunk being added to it), + the fp32 chunks of ft's chunked cross-entropy
               (tasks/token_loss.py: one when it fits one chunk, the saved log-softmax; two while
               a chunk is recomputed in backward)
  runtime      a fixed 0.5 GiB: the CUDA context and cuBLAS workspace on a GPU; torch's own
               buffers on CPU

Tokens and LM-head positions of a micro-batch. Without the data (`ft estimate`, the check before
`ft train`): micro-batch x data.max_length tokens, every position labelled: the longest micro-batch
any data can give. With the data (`ft estimate --data`, DataShape): the run's longest micro-batch,
as the trainer builds it: packed (train.packing), the sum of the micro-batch's longest examples,
else micro-batch x the longest example (padding to the batch's longest); with train.logits_only,
the LM head runs at the label positions only (packed: the sum of the most-labelled examples'
label counts), else at every position.

The activation constants were read off the autograd graph (the `_saved_*` tensors of every node)
of MiniLM (BERT) and SmolLM2 (Llama) with LoRA on CPU, and agree with measured peak RSS within
the bounds bench/estimate_accuracy.py reports (README, "Measured").
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from framework.config.schema import RunConfig
from framework.core.errors import UserError
from framework.hardware.base import MemoryLayout
from framework.store.checkpoint import checkpoint_size

IGNORE_INDEX = -100  # label of a position without loss (transformers' convention)

log = logging.getLogger("ft")

GiB = 2**30
RUNTIME_BYTES = (
    GiB // 2
)  # CUDA context + workspace; on CPU, torch and the data (about 0.5 GiB of RSS)
# [positions, vocabulary] tensors in the compute dtype at the loss's peak (measured on CPU, fp32
# and bf16, 256-4096 positions x 49,152: 3 + the fp32 chunk term within 11%).
LOGITS_COPIES = 3
LOGITS_CHUNKS_ONE = 1  # fp32 chunks when the loss fits one chunk (its saved log-softmax)
LOGITS_CHUNKS_MANY = 2  # fp32 chunks while backward recomputes one beside the one being freed
# Optimizer state per trainable parameter (bytes); an optimizer not listed counts as AdamW.
OPTIMIZER_STATE_BYTES = {
    "adamw": 8.0,
    "sgd": 4.0,
    "adamw_8bit": 2.0,
    "paged_adamw_8bit": 2.0,
    "adafactor": 0.5,
}
# config.json names of the same quantity across architectures (first found wins).
_INTERMEDIATE = ("intermediate_size", "d_ff", "n_inner", "ffn_dim", "encoder_ffn_dim")
_ATTN_DROPOUT = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop", "dropout_rate")
_HIDDEN_DROPOUT = (
    "hidden_dropout_prob",
    "resid_pdrop",
    "hidden_dropout",
    "dropout",
    "dropout_rate",
)


@dataclass
class ModelFacts:
    """What the estimate needs to know about the model + adapter (counted on the meta device)."""

    total_params: int
    trainable_params: int
    quantizable_params: int  # base linear weights a quantizing method stores in k bits
    layers: int  # transformer blocks (encoder + decoder)
    hidden: int
    intermediate: int
    heads: int
    kv_width: int  # key/value width per token (kv heads x head dim; = hidden without GQA)
    vocab: int  # output vocabulary when the model returns vocabulary logits, else 0
    gated_mlp: bool  # SwiGLU/GeGLU: gate and up projections (3 intermediate-wide saved tensors)
    attention_dropout: float
    hidden_dropout: float
    eager_attention: bool  # attention scores materialised (eager); else SDPA
    adapter_inputs: float = 0.0  # elements/token/block the adapter saves (inputs of its layers)
    adapter_masks: float = 0.0  # elements/token/block of its dropout masks


@dataclass
class Settings:
    """The run's choices that size memory (from the config, or one candidate of a search)."""

    micro_batch: int
    seq_len: int  # data.max_length: the longest example
    weight_bytes: float  # bytes per base parameter in the load dtype
    activation_bytes: int  # 2 under 16-bit weights or autocast, else 4
    on_gpu: bool
    gradient_checkpointing: bool
    optimizer: str
    layout: MemoryLayout = field(default_factory=MemoryLayout)
    quantized_bytes: float | None = None  # bytes per quantizable weight (QLoRA), else None
    other_base_bytes: float | None = None  # bytes per other base weight when quantizing
    # The objective's forwards: sequences per example in the forward with gradients (2: chosen
    # and rejected concatenated) and forwards without gradients (a reference), whose logits
    # exist beside the policy's while the step runs.
    sequences: int = 1
    no_grad_forwards: int = 0
    packed: bool = False  # train.packing on a task that packs: one padding-free row per batch
    logits_only: bool = False  # train.logits_only on a task that can skip logits
    data: DataShape | None = None  # the run's own examples (ft estimate --data), else None
    # Hook for a fused linear + cross-entropy loss (issue 21 part B): True once the trainer has
    # one (run_settings reads train.fused_loss when it exists); the logits then never exist whole.
    fused_loss: bool = False
    checkpoint_holds_base: bool = False  # the profile's checkpoints hold the frozen base (FSDP)
    optimizer_checkpoint_bytes: float = 8.0  # bytes per trainable parameter in a checkpoint

    def tokens(self) -> int:
        """Real tokens in the longest micro-batch (what the activations scale with), all the
        sequences of its examples (chosen + rejected for a paired objective) in one forward."""
        if self.data is None:
            return self.micro_batch * self.sequences * self.seq_len
        return self.data.tokens(self.micro_batch, self.packed) * self.sequences

    def longest_example(self) -> int:
        return self.seq_len if self.data is None else self.data.lengths[0]

    def lm_positions(self) -> int:
        """Positions the LM head runs at in the longest micro-batch."""
        if self.data is None:
            return self.tokens()
        if self.logits_only and self.packed:
            return sum(self.data.labels[: self.micro_batch])
        return self.tokens()  # padded rows: the union of the rows' label positions, <= width


@dataclass(frozen=True)
class DataShape:
    """The train split's examples as the trainer sees them, longest first (tokens) and most
    labelled first (positions whose next token carries a label): enough for the longest
    micro-batch of any size."""

    lengths: tuple[int, ...]
    labels: tuple[int, ...]

    def tokens(self, micro_batch: int, packed: bool) -> int:
        if packed:
            return sum(self.lengths[:micro_batch])
        return micro_batch * self.lengths[0]


@dataclass
class Estimate:
    """Bytes per device by component (ordered as printed) and what was assumed."""

    components: dict[str, int]
    facts: ModelFacts
    settings: Settings
    offloaded: int = 0  # bytes per process held in CPU RAM / on NVMe instead (offload, device_map)
    checkpoint: int = 0  # disk per checkpoint (bytes), as store/checkpoint.checkpoint_size counts

    @property
    def total(self) -> int:
        return sum(self.components.values())

    @property
    def training_bytes(self) -> int:
        """What training adds once the model is loaded: all but the weights and the runtime
        (what bench/estimate_accuracy.py compares with peak RSS over the loaded process)."""
        return self.total - self.components["weights"] - self.components["runtime"]


# ---- the arithmetic (no torch) ---------------------------------------------------------------
def block_elements(facts: ModelFacts, settings: Settings, seq_len: int) -> float:
    """Activation elements autograd saves per token in one transformer block (frozen base):

      norms        2 x hidden: the input of each of the block's two norms
      attention    SDPA kernels: query, key, value, output (2 x hidden + 2 x kv width);
                   materialised scores (eager, or SDPA on CPU with attention dropout, which falls
                   back to the math path): query, key and value, the latter two repeated to every
                   head under grouped-query attention (3 x hidden), + the softmax (heads x seq),
                   and with dropout its mask and output (3 x heads x seq)
      MLP          the activation's input (1 x intermediate); gated MLPs also keep the gate's
                   activation and the up projection for their product (3 x intermediate)
      dropout      the base's own hidden dropout: 2 masks of hidden width (attention and MLP out)
      adapter      the inputs of the adapter's trainable layers (LoRA A sees its dropout's output,
                   B the rank-wide A output) and the dropout masks (facts.adapter_*)

    Dropout masks are full-width tensors of the activation dtype on CPU (x * mask), one byte per
    element on CUDA (bool): they are counted here in elements of the activation dtype."""
    h, i, heads = facts.hidden, facts.intermediate, facts.heads
    mask = 1.0 if not settings.on_gpu else 1.0 / settings.activation_bytes
    materialised = facts.eager_attention or (not settings.on_gpu and facts.attention_dropout > 0)
    if materialised:
        attention = 3 * h + heads * seq_len * (1 + (1 + mask) * (facts.attention_dropout > 0))
    else:
        attention = 2 * h + 2 * facts.kv_width
    mlp = (3 if facts.gated_mlp else 1) * i
    dropout = 2 * h * mask if facts.hidden_dropout > 0 else 0.0
    return 2 * h + attention + mlp + dropout + facts.adapter_inputs + facts.adapter_masks * mask


def optimizer_checkpoint_bytes(optimizer: str, layout: MemoryLayout) -> float:
    """Bytes a checkpoint holds per trainable parameter for the optimizer: its states
    (OPTIMIZER_STATE_BYTES) + DeepSpeed's fp32 master copy under 16-bit."""
    return OPTIMIZER_STATE_BYTES.get(optimizer, 8.0) + (4.0 if layout.master_weights else 0.0)


def logits_buffer_bytes(micro_batch: int, seq_len: int, vocab: int) -> int:
    """One fp32 copy of a micro-batch's vocabulary logits (bytes)."""
    return micro_batch * seq_len * vocab * 4


def logits_bytes(positions: int, vocab: int, settings: Settings) -> float:
    """Peak bytes of the LM head's output and the loss over it (see the module docstring)."""
    from framework.tasks.token_loss import CHUNK_ELEMENTS

    if not vocab or not positions:
        return 0.0
    chunk_rows = max(1, CHUNK_ELEMENTS // vocab)
    chunk = min(positions, chunk_rows) * vocab * 4.0
    if settings.fused_loss:  # never whole: the chunks only (uncalibrated until it lands)
        return LOGITS_CHUNKS_MANY * chunk
    chunks = LOGITS_CHUNKS_ONE if positions <= chunk_rows else LOGITS_CHUNKS_MANY
    return LOGITS_COPIES * positions * vocab * settings.activation_bytes + chunks * chunk


def estimate(facts: ModelFacts, settings: Settings) -> Estimate:
    """Peak bytes per device of training with these facts and settings."""
    lay = settings.layout
    trainable = facts.trainable_params
    base = facts.total_params - trainable
    if settings.quantized_bytes is not None:
        other = base - facts.quantizable_params
        base_bytes = facts.quantizable_params * settings.quantized_bytes + other * (
            settings.other_base_bytes or settings.weight_bytes
        )
    else:
        base_bytes = base * settings.weight_bytes
    weights = base_bytes + trainable * 4.0  # peft keeps adapters in fp32
    if lay.shard_weights:
        weights /= lay.shards
    offloaded = 0.0
    if lay.offload_weights:
        offloaded = weights
        weights = weights / max(facts.layers, 1)  # one block streamed in at a time
    if lay.weights_cap is not None:
        offloaded = max(0.0, weights - lay.weights_cap)
        weights = min(weights, lay.weights_cap)
    gradients = trainable * 4.0 * (1 + lay.gradient_copies)
    if lay.shard_gradients:
        gradients /= lay.shards
    optimizer = trainable * (
        OPTIMIZER_STATE_BYTES.get(settings.optimizer, 8.0) + (4.0 if lay.master_weights else 0.0)
    )
    if lay.shard_optimizer:
        optimizer /= lay.shards
    if lay.offload_optimizer:
        offloaded += optimizer
        optimizer = 0.0
    tokens = settings.tokens()
    per_block = block_elements(facts, settings, settings.longest_example())
    if settings.gradient_checkpointing:
        saved = facts.layers * facts.hidden + per_block  # block inputs + one block recomputed
    else:
        saved = facts.layers * per_block
    activations = saved * tokens * settings.activation_bytes
    # A forward without gradients (the reference) holds its logits beside the policy's.
    logits = logits_bytes(settings.lm_positions(), facts.vocab, settings) * (
        1 + settings.no_grad_forwards / LOGITS_COPIES
    )
    components = {
        "weights": weights,
        "gradients": gradients,
        "optimizer": optimizer,
        "activations": activations,
        "logits": logits,
        "runtime": RUNTIME_BYTES,
    }
    saved_weights = trainable * 4.0 + (base_bytes if settings.checkpoint_holds_base else 0.0)
    disk = checkpoint_size(trainable, saved_weights, settings.optimizer_checkpoint_bytes)
    return Estimate(
        {k: int(round(v)) for k, v in components.items()},
        facts,
        settings,
        int(round(offloaded)),
        disk,
    )


# ---- reading a run (torch, meta device) -------------------------------------------------------
def _first(config: Any, names: tuple[str, ...], default: Any = None) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def _blocks(model: Any) -> list[Any]:
    """The transformer blocks: items of the outermost ModuleLists that hold linear layers."""
    import torch

    found: list[Any] = []

    def walk(module: Any) -> None:
        for child in module.children():
            if isinstance(child, torch.nn.ModuleList) and any(
                isinstance(m, torch.nn.Linear) for m in child.modules()
            ):
                found.extend(child)
            else:
                walk(child)

    walk(model)
    return found


def _in_width(layer: Any) -> int:
    """Input width of an adapter factor: a Linear's in_features, or a (out, in) Parameter's last
    dimension (AdaLoRA keeps its factors as Parameters)."""
    return int(getattr(layer, "in_features", None) or layer.shape[-1])


def _adapter_elements(block: Any) -> tuple[float, float]:
    """(inputs, masks): elements per token the adapter's trainable linear layers in one block
    save. Without adapter dropout, layers of one parent with the same input width read the same
    tensor (q/k/v, gate/up) and it is counted once; with dropout each has its own copy + mask."""
    import torch

    inputs, masks = 0.0, 0.0
    shared = set()
    for name, module in block.named_modules():
        dropouts = getattr(module, "lora_dropout", None)
        if dropouts is not None and hasattr(module, "lora_A"):
            for key, layer in module.lora_A.items():
                width = _in_width(layer)
                p = getattr(dropouts[key], "p", 0.0) if key in dropouts else 0.0
                if p > 0:
                    inputs, masks = inputs + width, masks + width
                elif (name.rsplit(".", 1)[0], width) not in shared:
                    shared.add((name.rsplit(".", 1)[0], width))
                    inputs += width
            inputs += sum(_in_width(layer) for layer in module.lora_B.values())
            continue
        if (
            name
            and not hasattr(module, "lora_A")
            and isinstance(module, torch.nn.Linear)
            and module.weight.requires_grad
            and ".lora_" not in f".{name}"
        ):
            inputs += module.in_features  # another method's trainable linear
    return inputs, masks


def model_facts(run: RunConfig) -> ModelFacts:
    """Build the task model + adapter on the meta device and count what the estimate needs."""
    with warnings.catch_warnings():  # deprecation notices of transformers/peft internals
        warnings.simplefilter("ignore", FutureWarning)
        return _model_facts(run)


def _model_facts(run: RunConfig) -> ModelFacts:
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig

    from framework.models.loading import hub_token, resolve_checkpoint
    from framework.models.skeleton import meta_model
    from framework.training.model import apply_peft

    family = run.plugins.family
    task = run.plugins.task_class
    method = run.plugins.method
    checkpoint = resolve_checkpoint(family, run.model)
    try:
        config = AutoConfig.from_pretrained(
            checkpoint,
            revision=run.model.revision,
            trust_remote_code=run.model.trust_remote_code,
            token=hub_token(run.model),
        )
    except (OSError, ValueError) as error:
        raise UserError(
            f"model.checkpoint='{checkpoint}': cannot read its config.json: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else error}"
        ) from None
    auto_class = family.auto_model(task.auto_model, config)
    model = meta_model(config, auto_class, run.model.trust_remote_code)
    if getattr(config, "tie_word_embeddings", False) and hasattr(model, "tie_weights"):
        model.tie_weights()  # from_pretrained ties them; from_config on meta does not
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    with init_empty_weights():
        model = apply_peft(run, model, method, family)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    quantizable = sum(
        m.weight.numel()
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear)
        and m is not output
        and not m.weight.requires_grad
        and ".lora_" not in f".{n}"
        and "modules_to_save" not in n
        and "original_module" not in n
    )
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = int(_first(text, ("hidden_size", "d_model", "n_embd")))
    heads = int(_first(text, ("num_attention_heads", "n_head", "encoder_attention_heads"), 1))
    head_dim = int(_first(text, ("head_dim",), hidden // heads))
    kv_heads = int(_first(text, ("num_key_value_heads",), heads))
    intermediate = int(_first(text, _INTERMEDIATE, 4 * hidden))
    blocks = _blocks(model)
    first = blocks[0] if blocks else model
    wide = sum(
        1
        for n, m in first.named_modules()
        if isinstance(m, torch.nn.Linear)
        and m.out_features == intermediate
        and ".lora_" not in f".{n}"
    )
    inputs, masks = _adapter_elements(first) if blocks else (0.0, 0.0)
    return ModelFacts(
        total_params=total,
        trainable_params=trainable,
        quantizable_params=quantizable,
        layers=len(blocks) or int(_first(text, ("num_hidden_layers",), 1)),
        hidden=hidden,
        intermediate=intermediate,
        heads=heads,
        kv_width=kv_heads * head_dim,
        vocab=int(getattr(output, "out_features", 0)) if output is not None else 0,
        gated_mlp=wide >= 2,
        attention_dropout=float(_first(text, _ATTN_DROPOUT, 0.0) or 0.0),
        hidden_dropout=float(_first(text, _HIDDEN_DROPOUT, 0.0) or 0.0),
        eager_attention=getattr(text, "_attn_implementation", "eager") == "eager"
        or run.model.attn_implementation == "eager",
        adapter_inputs=inputs,
        adapter_masks=masks,
    )


def run_settings(run: RunConfig, data: DataShape | None = None) -> Settings:
    """The sizing choices of a run: micro-batch, data.max_length (or the data's own shape),
    dtypes, hardware layout, the speed paths that change memory."""
    profile = run.plugins.profile
    method = run.plugins.method
    on_gpu = profile.on_gpu(run.hardware)
    dtype = run.model.dtype
    if dtype == "auto":
        dtype = "bfloat16" if on_gpu and _bf16_or_no_gpu() else "float32"
    weight_bytes = 4.0 if dtype == "float32" else 2.0
    precision = run.hardware.precision
    if precision == "auto":
        precision = "bf16" if on_gpu else "no"
    activation_bytes = 2 if weight_bytes == 2.0 or precision in ("bf16", "fp16") else 4
    quantized = method.base_weight_bytes(run.peft, weight_bytes, True)
    other = method.base_weight_bytes(run.peft, weight_bytes, False)
    quantizes = quantized != weight_bytes or other != weight_bytes
    if quantizes:
        activation_bytes = 2 if getattr(run.peft, "compute_dtype", "") != "float32" else 4
    layout = profile.memory_layout(run.hardware, run.train)
    task = run.plugins.task_class
    return Settings(
        micro_batch=run.train.batch_size,
        seq_len=run.data.max_length,
        weight_bytes=weight_bytes,
        activation_bytes=activation_bytes,
        on_gpu=on_gpu,
        gradient_checkpointing=run.train.gradient_checkpointing or layout.checkpoints_activations,
        optimizer=run.train.optimizer,
        layout=layout,
        quantized_bytes=quantized if quantizes else None,
        other_base_bytes=other if quantizes else None,
        sequences=run.plugins.objective.sequences_per_example,
        no_grad_forwards=run.plugins.objective.no_grad_forwards,
        packed=run.train.packing and task.can_pack and not method.prompt_learning,
        logits_only=run.train.logits_only and task.can_skip_logits and not method.prompt_learning,
        data=data,
        fused_loss=bool(getattr(run.train, "fused_loss", False)),  # part B's key, once it lands
        checkpoint_holds_base=profile.checkpoint_holds_base(run.hardware),
        optimizer_checkpoint_bytes=optimizer_checkpoint_bytes(run.train.optimizer, layout),
    )


def _bf16_or_no_gpu() -> bool:
    """bf16 on this machine's GPU, or (planning for a GPU elsewhere) assume a bf16 GPU."""
    import torch

    return not torch.cuda.is_available() or torch.cuda.is_bf16_supported()


def estimate_run(
    run: RunConfig, facts: ModelFacts | None = None, data: DataShape | None = None
) -> Estimate:
    """The estimate of a validated run (builds the meta model unless facts are given); with the
    data's shape (read_data_shape), for the run's own longest micro-batch."""
    return estimate(facts or model_facts(run), run_settings(run, data))


def read_data_shape(run: RunConfig) -> DataShape:
    """The train split's token lengths and label counts, tokenized as ft train tokenizes them
    (through the same token cache, so a later ft train finds it there); the model is not read."""
    from framework.data.loading import load_raw_splits
    from framework.models.loading import load_tokenizer, resolve_checkpoint
    from framework.training.token_cache import tokenize_cached

    family = run.plugins.family
    tokenizer = load_tokenizer(family, run.model, resolve_checkpoint(family, run.model))
    task = run.plugins.task_class(run.task, run.data, tokenizer, family)
    raw = load_raw_splits(run.plugins.source, run.data, run.data_source)
    task.check_columns(raw.splits, raw.describe)
    task.fit_labels(raw.splits, raw.describe)
    train = tokenize_cached(run, task, tokenizer, raw.splits)["train"]
    if not len(train):
        raise UserError(f"data={run.data.name}: no train example left after tokenization")
    lengths = sorted((len(ids) for ids in train["input_ids"]), reverse=True)
    labels: list[int] = []
    if "labels" in train.column_names and task.can_skip_logits:  # token labels, shifted by one
        labels = sorted(
            (sum(1 for label in row[1:] if label != IGNORE_INDEX) for row in train["labels"]),
            reverse=True,
        )
    return DataShape(tuple(lengths), tuple(labels) or tuple(lengths))


def device_memory() -> tuple[int, str]:
    """(bytes, what) of the device a run would use here: the first CUDA GPU, else system RAM."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return props.total_memory, f"GPU 0 ({props.name})"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "system RAM"


# ---- output -----------------------------------------------------------------------------------
def fmt_bytes(value: float) -> str:
    """Bytes as MiB below 1 GiB, else GiB."""
    return f"{value / GiB:.2f} GiB" if value >= GiB else f"{value / 2**20:.1f} MiB"


def sharing_processes(run: RunConfig) -> int:
    """Processes whose memory one device holds: 1 per GPU; on CPU every process of this machine
    shares its RAM."""
    profile = run.plugins.profile
    return 1 if profile.on_gpu(run.hardware) else run.hardware.num_processes


def needed(found: Estimate, run: RunConfig) -> int:
    """Bytes the device must hold: the per-process estimate x the processes sharing it."""
    return found.total * sharing_processes(run)


def warn_if_too_big(run: RunConfig) -> None:
    """Before `ft train` loads anything: log a warning when the estimate exceeds this machine's
    device memory. Never fails the run (an estimate that cannot be made is only logged)."""
    start = time.perf_counter()
    try:
        limit, limit_name = device_memory()
        if run.plugins.profile.on_gpu(run.hardware) and limit_name == "system RAM":
            return  # a GPU run planned on a machine without one: nothing to compare with
        found = estimate_run(run)
        need = needed(found, run)
        if need > limit:
            log.warning(
                "memory estimate: %s > %s (%s); the run may run out of memory (details: "
                "ft estimate %s ...)",
                fmt_bytes(need),
                fmt_bytes(limit),
                limit_name,
                run.recipe,
            )
        else:
            log.info(
                "memory estimate: %s of %s (%s)", fmt_bytes(need), fmt_bytes(limit), limit_name
            )
    except Exception as error:
        log.debug("memory estimate skipped: %s", error)
    log.debug("memory estimate took %.2fs", time.perf_counter() - start)
