"""Typed parameters of the config groups, shared by the schema and the plug-ins.

``GroupParams`` is the base of every preset's schema (its ``name`` is the registry key); ``TrainConfig``
and ``DataConfig`` are the fixed schemas of the `train` and `data` groups. This module imports nothing
from ft, so that any layer (plug-ins included) can use these types without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(kw_only=True)
class GroupParams:
    """Base of every preset's schema: ``name`` is the registry key that builds it."""

    name: str


@dataclass(kw_only=True)
class TrainConfig:
    """Optimisation settings (the `train` group). Batch sizes are per process, in examples."""

    epochs: int = 1  # full passes over the training split; ignored when max_steps is set
    max_steps: int | None = None  # optimizer steps; overrides epochs when set
    batch_size: int = 8  # examples per process per micro-batch
    # real tokens per process per training micro-batch instead (consecutive examples of the
    # shuffled order up to this many tokens; packed rows then have a bounded, repeating length)
    tokens_per_batch: int | None = None
    eval_batch_size: int | None = None  # defaults to batch_size
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 2e-4
    weight_decay: float = 0.0
    optimizer: Literal["adamw", "sgd"] = "adamw"
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_ratio: float = 0.0  # fraction of total optimizer steps spent warming up
    max_grad_norm: float | None = 1.0  # clip the global grad norm; null = no clipping
    eval_every: int = 0  # optimizer steps between evaluations; 0 = only at the end
    eval_before: bool = False  # evaluate the untrained model first (baseline in metrics.jsonl)
    log_every: int = 10  # optimizer steps between loss logs (each log costs one host sync)
    save_every: int = 0  # optimizer steps between checkpoints; 0 = no intermediate checkpoints
    # also checkpoint once this much wall time passed since the last save
    save_every_minutes: float | None = None
    keep_last: int = 2  # complete checkpoints kept; the newest complete one is never deleted
    nan_policy: Literal["skip", "stop"] = "stop"  # on a non-finite loss: skip the step, or stop
    gradient_checkpointing: bool = False  # trade compute for activation memory
    num_workers: int = 0  # DataLoader worker processes
    # adapter/ = best eval by the task's primary metric; adapter_last/ = last
    keep_best: bool = False
    early_stopping_patience: int | None = None  # stop after this many evals without improvement
    # smallest change of the primary metric that counts as improving
    early_stopping_delta: float = 0.0
    # ---- speed (docs/speed.md measures each) ----
    # causal LM: one padding-free row per micro-batch (where the model supports it)
    packing: bool = True
    # packed rows: SDPA per example, not over a (row length)^2 block mask
    packed_attention: bool = True
    group_by_length: bool = False  # other tasks: batch examples of similar length (less padding)
    logits_only: bool = True  # causal LM: LM head only at positions that have a label
    # with logits_only: the LM head's matmul inside the cross-entropy, chunked over tokens
    fused_loss: bool = True
    # classification read at the first token: the last encoder layer computes only that position
    pooled_only: bool = True
    compile: bool = False  # torch.compile the model (first steps are slow while it compiles)
    # its backend
    compile_backend: Literal["inductor", "aot_eager", "eager", "cudagraphs"] = "inductor"
    # fused AdamW kernel; also lets a non-finite step be skipped on the device
    fused_optimizer: bool = True
    pin_memory: bool = True  # page-locked host batches (faster host->GPU copies; no effect on CPU)
    profile: bool = False  # torch-profiler trace of a few steps into the run dir + top-10 ops


@dataclass(kw_only=True)
class SourceConfig:
    """One entry of `data.sources` (data=mix): a source with its own options and columns, and its
    share of the training examples: a sampling `weight`, a fixed `count`, or (neither) all of it."""

    name: str  # a data source: files, hub, or a built-in dataset (`ft list data`)
    source: dict[str, Any] = field(default_factory=dict)  # the source's own options
    columns: dict[str, str] = field(default_factory=dict)  # role -> column, over data.columns
    id: str | None = None  # its name in logs and metric keys (eval/<id>/...); default: the name
    weight: float | None = None  # sampling weight, relative (normalised over the sources)
    count: int | None = None  # or: exactly this many training examples (a smaller source repeats)


@dataclass(kw_only=True)
class DataConfig:
    """Where examples come from and how they are cut (the `data` group)."""

    name: str  # a data source: files, hub, a built-in dataset, or mix (`ft list data`)
    source: dict[str, Any] = field(default_factory=dict)  # the source's own options
    columns: dict[str, str] = field(default_factory=dict)  # task role -> column in the data
    # data=mix: the sources mixed into one run (weighted: datasets.interleave_datasets; counts or
    # whole sources: concatenated), each validated and evaluated on its own as well
    sources: list[SourceConfig] = field(default_factory=list)
    # weighted mix: stop at the first source that runs out, or oversample until all have
    stopping_strategy: Literal[
        "first_exhausted", "all_exhausted", "all_exhausted_without_replacement"
    ] = "first_exhausted"
    # read the training split as a stream (datasets.IterableDataset), never all of it at once;
    # needs train.max_steps
    streaming: bool = False
    shuffle_buffer: int = 10_000  # streaming: examples shuffled together (0 = stream order)
    # continued pretraining: `text` documents joined with the end-of-document token and cut into
    # blocks of this many tokens, every token trained (data.max_length does not apply)
    block_size: int | None = None
    validation_split: float = 0.1  # held-out fraction when the data has no validation split
    max_length: int = 256  # tokens per example
    truncation: bool = True  # false: drop (and count) examples longer than max_length
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    shuffle_seed: int = 0  # seed of the held-out split, the mix and the streaming shuffle
    # processes that tokenize a split (splits under 5,000 rows per process use fewer); null = the
    # CPU cores this process may run on. The tokenized data is the same for any value.
    num_proc: int | None = None


class RunView(Protocol):
    """What a plug-in reads of a validated run (config/schema.py's RunConfig is one): the typed
    params of every group and the run's top-level settings. Plug-ins stand below the config
    layer, so they name this protocol rather than the RunConfig class. Read-only: a validated
    run is frozen."""

    @property
    def recipe(self) -> str: ...

    @property
    def seed(self) -> int: ...

    @property
    def dry_run(self) -> bool: ...

    @property
    def resume(self) -> str | None: ...

    @property
    def run_dir(self) -> str | None: ...

    @property
    def output_root(self) -> str: ...

    @property
    def model(self) -> Any: ...  # models/params.py ModelParams

    @property
    def peft(self) -> Any: ...  # peft/base.py PeftParams (or a method's own Params)

    @property
    def task(self) -> Any: ...  # tasks/base.py TaskParams (or a task's own Params)

    @property
    def hardware(self) -> Any: ...  # hardware/base.py HardwareParams (or a profile's own Params)

    @property
    def data(self) -> DataConfig: ...

    @property
    def train(self) -> TrainConfig: ...

    @property
    def logger(self) -> dict[str, Any]: ...  # logger name -> its params

    @property
    def objective(self) -> Any: ...  # objectives/base.py ObjectiveParams (or an objective's own)

    @property
    def data_source(self) -> Any: ...  # the data source's typed params

    @property
    def data_sources(self) -> tuple[Any, ...]: ...  # data=mix: each source's typed params

    @property
    def architecture(self) -> dict[str, Any] | None: ...  # config.json as validation read it

    @property
    def plugins(self) -> Any: ...  # config/schema.py Plugins: the registry entries the presets name
