"""Tasks: one registered class per PEFT task type. A task owns everything that depends on the
kind of output: the AutoModelFor* class, the columns it needs, tokenization, collation, the loss
(when the model's own is not it), evaluation metrics and prediction output."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from framework.core.errors import UserError
from framework.core.params import DataConfig, GroupParams, RunView
from framework.core.registry import TASKS
from framework.core.streams import is_stream
from framework.store.run_dir import TASK_FILE

# Rows per tokenizing process below which a split is tokenized in this process: starting a worker
# (fork, unpickling the task and its tokenizer) costs more than it saves on a small split.
MIN_ROWS_PER_PROCESS = 5_000


def worker_count(num_proc: int | None, rows: int) -> int:
    """Tokenizing processes for a split of `rows` rows under data.num_proc (null: the cores
    this process may run on)."""
    if num_proc is None:
        num_proc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        num_proc = num_proc or os.cpu_count() or 1
    return max(1, min(num_proc, rows // MIN_ROWS_PER_PROCESS))


def column_sum(dataset: Any, column: str) -> int:
    """Sum of an integer column, read by Arrow (no Python object per row)."""
    import pyarrow.compute as pc

    total = pc.sum(dataset.with_format("arrow")[column]).as_py()
    return int(total or 0)


@dataclass
class TokenizingPass:
    """Set on a task by the token cache for one tokenizing pass: the folder that receives the
    pass's Arrow files (beside the cache entry being built, so nothing lands in datasets' own
    cache) and the pass's key (datasets' fingerprints of the pass's steps are derived from it
    instead of hashing the task and its tokenizer for every map)."""

    work_dir: Path
    key: str


@dataclass(kw_only=True)
class TaskParams(GroupParams):
    """Fields every task shares (none yet beyond name)."""


class Task:
    """Base class of a registered task. A task instance lives for one run."""

    Params: ClassVar[type] = TaskParams
    auto_model: ClassVar[str] = ""  # transformers AutoModelFor* class name
    peft_task_type: ClassVar[str] = ""  # peft TaskType value
    # Model kinds the task needs beyond its Auto class having a class for the model type:
    # None = any; e.g. {"decoder"} for causal LM (an encoder's LM head attends both ways).
    model_kinds: ClassVar[frozenset[str] | None] = None
    primary_metric: ClassVar[str] = "eval_loss"  # what sweeps optimise and `make demo` reports
    greater_is_better: ClassVar[bool] = False
    # Whether the task's examples can be packed into padding-free rows (tasks/packing.py); the
    # trainer then sets `packed` when train.packing is on and the model honours packed rows.
    can_pack: ClassVar[bool] = False
    packed: bool = False
    # With `packed`: the collator sends each row's example lengths (tasks/packing.LENGTHS_KEY), for
    # attention computed per example; the trainer sets it when it installs that attention.
    packed_lengths: bool = False
    # With `packed` under torch.compile: the same boundaries as a tensor (packing.CU_SEQLENS_KEY),
    # and rows padded up to a multiple of `row_multiple` tokens so that shapes repeat.
    packed_offsets: bool = False
    row_multiple: int | None = None
    # Whether the task can run the LM head only where labels are (tasks/token_loss.py); the
    # trainer then sets `logits_only` when train.logits_only is on and the model takes it.
    can_skip_logits: ClassVar[bool] = False
    logits_only: bool = False
    # Whether the task's own loss can take a fused LM head + cross-entropy (tasks/fused_loss.py);
    # with `logits_only`, the trainer then sets `fused_head` (a FusedHead) when train.fused_loss is
    # on and the model's logits are exactly its head's (checked at set-up).
    can_fuse_loss: ClassVar[bool] = False
    fused_head: Any = None
    # Whether the task's head reads the encoder's output at the first position only (pooled
    # classification); the trainer then runs the last layer at that position where the model
    # gives the same logits with it (training/pooled_only.py, train.pooled_only).
    can_pool_first_only: ClassVar[bool] = False
    # Whether tokenize() takes a streamed training split (data.streaming: nothing read whole
    # before training) and cuts text into data.block_size blocks (continued pretraining).
    can_stream: ClassVar[bool] = False
    takes_blocks: ClassVar[bool] = False
    tokenizing: TokenizingPass | None = None
    # The batches the task's collator gives, as objectives name them (framework/objectives/base):
    # "task" = its own examples, trained by its own loss (objective cross_entropy).
    data_kinds: ClassVar[frozenset[str]] = frozenset({"task"})

    def __init__(self, params: TaskParams, data: DataConfig, tokenizer: Any, family: Any):
        self.params = params
        self.data = data
        self.tokenizer = tokenizer
        self.family = family

    @classmethod
    def params_problems(cls, params: TaskParams, run: RunView) -> list[str]:
        """Impossible task settings, found before anything is loaded; each names its key."""
        return []

    @classmethod
    def no_template_problem(
        cls, params: Any, data: Any, first_row: dict[str, Any] | None, checkpoint: str
    ) -> str | None:
        """Asked before anything is loaded: the one line (key, value, fix) for this run's rows
        should the tokenizer of `checkpoint` have no chat template, or None when the rows need
        none (or their shape is not known before they are read). first_row: the data's first
        row when it can be read cheaply."""
        return None

    @classmethod
    def tasks_giving(cls, data_kind: str) -> list[str]:
        """Registered tasks whose batches are of `data_kind` (for messages)."""
        return [name for name in TASKS.names() if data_kind in TASKS.get(name).data_kinds]

    def use_objective(self, objective: Any, train: Any) -> None:
        """Told once, before tokenization, which objective reads the batches (and the train
        settings): a task that tokenizes differently for one takes it here."""

    def use_fast_paths(self, chosen: Any) -> None:
        """The speed choices of training/speed.py for this run (packing, logits_only, ...),
        before any loader iterates: the collator follows them."""
        self.packed = chosen.packed
        self.packed_lengths = chosen.packed_lengths
        self.packed_offsets = chosen.packed_offsets
        self.row_multiple = chosen.row_multiple
        self.logits_only = chosen.logits_only
        self.fused_head = chosen.fused_head

    # ---- columns -------------------------------------------------------------------------
    def roles(self) -> dict[str, bool]:
        """Column roles this task reads: role -> required. data.columns maps role -> column."""
        raise NotImplementedError

    def column(self, role: str) -> str:
        return self.data.columns.get(role, role)

    def check_columns(self, splits: Any, describe: Callable[[str], str]) -> None:
        """Raise a UserError naming the file, split and column when a needed column is absent."""
        for split, dataset in splits.items():
            for role, required in self.roles().items():
                col = self.column(role)
                if required and col not in dataset.column_names:
                    raise UserError(
                        f"data.columns.{role}: column '{col}' not found in split '{split}' of "
                        f"{describe(split)}; it has columns {dataset.column_names}. "
                        f"Fix: data.columns.{role}=<one of those>"
                    )

    # ---- labels and model ------------------------------------------------------------------
    def fit_labels(self, splits: Any, describe: Callable[[str], str]) -> None:
        """Learn label maps from the train split and check the other splits against them."""

    def model_kwargs(self) -> dict[str, Any]:
        """Extra from_pretrained kwargs (num_labels, id2label, ...)."""
        return {}

    def artifacts(self) -> dict[str, Any]:
        """JSON-serialisable facts saved beside the adapter (label maps, ...)."""
        return {}

    def restore_artifacts(self, extras: dict[str, Any]) -> None:
        """Take back what artifacts() saved (label maps), before model_kwargs() is used."""

    def predict_roles(self) -> dict[str, bool]:
        """Columns `ft predict` input rows need (by default the inputs, not the targets)."""
        return {
            role: required
            for role, required in self.roles().items()
            if role not in ("label", "labels", "tags", "response", "target", "answers")
        }

    def save_artifacts(self, directory: Path) -> None:
        extras = self.artifacts()
        if extras:
            (directory / TASK_FILE).write_text(json.dumps(extras, indent=2))

    # ---- data ------------------------------------------------------------------------------
    def tokenize(self, splits: Any) -> Any:
        """Turn raw splits into model inputs with datasets.map (cached by fingerprint)."""
        raise NotImplementedError

    def use_tokenized(self, tokenized: dict[str, Any]) -> None:
        """Called with the tokenized splits, whether tokenize() made them or the tokenization
        cache had them: a task that keeps a split for itself takes it here."""

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        raise NotImplementedError

    def map_options(self, dataset: Any, split: str, step: str) -> dict[str, Any]:
        """`datasets.map`/`filter` options of one tokenizing step of a split: data.num_proc
        processes (one for a small split), and, in a token-cache pass, its own Arrow file and
        fingerprint."""
        processes = worker_count(self.data.num_proc, len(dataset))
        options: dict[str, Any] = {"num_proc": processes if processes > 1 else None}
        if self.tokenizing is not None:
            options["cache_file_name"] = str(self.tokenizing.work_dir / f"{split}-{step}.arrow")
            options["new_fingerprint"] = f"{self.tokenizing.key}-{split}-{step}"
        return options

    def encode_split(
        self,
        dataset: Any,
        split: str,
        encode: Callable[..., dict[str, Any]],
        fn_kwargs: dict[str, Any] | None = None,
        length_of: Callable[[dict], int] | None = None,
        with_indices: bool = False,
    ) -> Any:
        """Tokenize one split with batched `datasets.map` in data.num_proc processes, replacing
        its columns with encode's output (with_indices: encode also takes the rows' indices);
        under data.truncation=false, drop over-long examples (length_of gives an example's length
        in tokens; default: its input_ids). A stream is mapped lazily, as training reads it."""
        streamed = is_stream(dataset)
        encoded = dataset.map(
            encode,
            batched=True,
            with_indices=with_indices,
            remove_columns=dataset.column_names,
            fn_kwargs=fn_kwargs,
            **(
                {}
                if streamed
                else {"desc": f"tokenizing {split}", **self.map_options(dataset, split, "encode")}
            ),
        )
        if streamed:
            limit = self.data.max_length
            measure = length_of or (lambda ex: len(ex["input_ids"]))
            return (
                encoded if self.data.truncation else encoded.filter(lambda e: measure(e) <= limit)
            )
        if not self.data.truncation:
            encoded = self.drop_too_long(
                encoded, split, length_of or (lambda ex: len(ex["input_ids"]))
            )
        return encoded

    def keep_where(self, dataset: Any, column: str, keep: Callable[[Any], Any]) -> Any:
        """The rows whose `column` value passes `keep` (vectorised over a numpy array); the
        dataset itself, with no indices mapping, when every row passes."""
        import numpy as np

        values = np.asarray(dataset.with_format("arrow")[column])
        if len(values) == 0 or bool(keep(values).all()):
            return dataset
        return dataset.select(np.flatnonzero(keep(values)))

    def data_notes(self, split: str) -> list[str]:
        """What tokenizing `split` dropped or cut, for `ft validate --data` (none by default)."""
        return []

    def drop_too_long(self, dataset: Any, split: str, length_of: Callable[[dict], int]) -> Any:
        """Under truncation=false, drop over-long examples; fail if none are left."""
        limit = self.data.max_length
        kept = dataset.filter(
            lambda ex: length_of(ex) <= limit, **self.map_options(dataset, split, "fit")
        )
        if len(kept) == 0 and len(dataset) > 0:
            raise UserError(
                f"data.max_length={limit}: every example of split '{split}' is longer "
                f"and data.truncation=false drops them. Fix: raise data.max_length or "
                f"set data.truncation=true"
            )
        return kept

    # ---- training and evaluation -----------------------------------------------------------
    def compute_loss(self, model: Any, batch: dict[str, Any]) -> Any:
        """The training loss; by default the model's own (labels are in the batch)."""
        return model(**batch).loss

    def count_items(self, batch: dict[str, Any]) -> Any:
        """What the loss averages over in this batch, as a device tensor: examples by default;
        tasks with token labels count label tokens. The trainer normalises each optimizer step's
        loss by the count of all its micro-batches on all processes."""
        import torch

        first = next(v for v in batch.values() if isinstance(v, torch.Tensor))
        return torch.full((), float(first.shape[0]), device=first.device)  # no host->device copy

    def loss_terms(self, model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
        """(loss summed over the batch's items, item count): compute_loss's mean times the count,
        unless the task sums its loss itself."""
        count = self.count_items(batch)
        return self.compute_loss(model, batch) * count, count

    def evaluate(
        self, model: Any, loader: Iterable, accelerator: Any, raw: Any | None = None
    ) -> dict[str, float]:
        """Metrics on a held-out split: always eval_loss, plus the task's own."""
        raise NotImplementedError

    def mean_loss(self, model: Any, loader: Iterable, accelerator: Any) -> float:
        """Example-weighted mean loss over a loader, across processes."""
        import torch

        total = torch.zeros(2, device=accelerator.device)
        with torch.no_grad():
            for batch in loader:
                loss = self.compute_loss(model, batch)
                n = next(iter(batch.values())).shape[0]
                total += torch.stack(
                    [loss.detach().float() * n, torch.tensor(float(n), device=total.device)]
                )
        total = accelerator.reduce(total, reduction="sum")
        return float(total[0] / total[1].clamp(min=1))

    # ---- prediction ------------------------------------------------------------------------
    def predict(self, model: Any, rows: list[dict[str, Any]], device: Any) -> list[dict[str, Any]]:
        """Predictions for raw rows (what `ft predict` writes, one JSON object per row)."""
        raise NotImplementedError


def safe_exp(x: float) -> float:
    return math.exp(min(x, 50.0))
