"""A fused LM head + cross-entropy that never holds the logits of all label tokens.

`token_loss.causal_lm_loss` with `train.logits_only` still asks the model for the logits of every
label token: [label tokens, vocab] in the model's dtype, plus their fp32 gradient in backward. For
a 262k vocabulary and 2,048 label tokens that is 2 GiB of fp32 logits and 2 GiB more for their
gradient. Here the head's matmul runs inside the loss, a chunk of tokens at a time:

* `linear_cross_entropy` (a torch.autograd.Function) takes the hidden states at the label
  positions, the head's weight (and bias, and a LoRA adapter's low-rank factors when lm_head has
  one) and the targets; per chunk it computes the logits, the fp32 log-sum-exp and the loss, and,
  when a gradient is wanted, the logits' gradient (softmax minus one-hot) and from it the
  gradients of the hidden states, of the adapter and of any trainable head weight. Only those
  gradients (the size of the inputs) outlive the chunk; backward only scales them by the upstream
  gradient. So no matmul is repeated (a recompute-in-backward design runs the head twice) and the
  peak is one chunk of logits: CHUNK_ELEMENTS fp32 values (64 MiB) and its gradient.
* `FusedHead` gets the hidden states without running the head: a forward pre-hook on the model's
  output-embedding module (the lm_head, or peft's LoRA layer wrapping it) keeps its input and hands
  the head an empty slice of it, so the model's own forward (with `logits_to_keep`) runs unchanged
  up to the head and its head multiplies nothing. Whether the model's logits are exactly
  `head(final hidden states)` (no soft-capping, scaling or other post-processing) is not written
  anywhere: `FusedHead.works` compares the fused loss with the model's own on a few tokens, and the
  trainer uses the fused loss only when they agree.

On CUDA with liger-kernel installed (the `liger` extra) and no adapter on the head, Liger's Triton
kernel does the same work; it is imported only then.
"""

from __future__ import annotations

import functools
from typing import Any

from framework.core.batch_keys import IGNORE_INDEX
from framework.tasks.probe import agrees

# Logits per chunk: 64 MiB of fp32 (e.g. 64 tokens of a 262k vocabulary); the chunked loss's own
# size (tasks/token_loss.py), so that `ft estimate` sizes both from one number.
from framework.tasks.token_loss import CHUNK_ELEMENTS


def _chunk_rows(vocab: int, rows: int) -> int:
    return max(1, min(rows, CHUNK_ELEMENTS // max(1, vocab)))


def _apply(
    hidden: Any,
    weight: Any,
    bias: Any,
    low_in: Any,
    low_out: Any,
    targets: Any,
    want: tuple[bool, bool, bool, bool, bool],
) -> tuple[Any, ...]:
    """The loss sum and, for the inputs whose `want` flag is set, the gradients of that sum.
    hidden [N, H]; weight [V, H]; bias [V] or None; low_in [N, r] and low_out [V, r] or None
    (logits = hidden weight^T + bias + low_in low_out^T); targets [N] (IGNORE_INDEX skipped)."""
    import torch

    want_hidden, want_weight, want_bias, want_in, want_out = want
    rows = _chunk_rows(weight.shape[0], hidden.shape[0])
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    grad_hidden = torch.zeros_like(hidden) if want_hidden else None
    grad_in = torch.zeros_like(low_in) if want_in else None
    # Summed over chunks in fp32, cast to the parameter's dtype at the end.
    grad_weight = torch.zeros_like(weight, dtype=torch.float32) if want_weight else None
    grad_bias = torch.zeros_like(bias, dtype=torch.float32) if want_bias else None
    grad_out = torch.zeros_like(low_out, dtype=torch.float32) if want_out else None
    any_grad = any(want)
    for start in range(0, hidden.shape[0], rows):
        end = min(start + rows, hidden.shape[0])
        part = hidden[start:end]
        logits = part @ weight.t() if bias is None else torch.addmm(bias, part, weight.t())
        if low_in is not None:
            logits = logits.addmm_(low_in[start:end], low_out.t())
        logits = logits.float()
        target = targets[start:end]
        valid = target != IGNORE_INDEX
        safe = torch.where(valid, target, 0)
        lse = torch.logsumexp(logits, dim=-1)
        picked = logits.gather(1, safe[:, None]).squeeze(1)
        total = total + torch.where(valid, lse - picked, 0.0).sum()
        if not any_grad:
            continue
        # d(sum of losses)/d logits = softmax - one_hot(target), zero on ignored rows; computed in
        # the logits' own buffer (no second chunk-sized tensor).
        grad = logits.sub_(lse[:, None]).exp_()
        grad.scatter_add_(1, safe[:, None], torch.full_like(lse[:, None], -1.0))
        grad.mul_(valid[:, None])
        if want_weight:
            grad_weight.addmm_(grad.t(), part.float())
        if want_out:
            grad_out.addmm_(grad.t(), low_in[start:end].float())
        if want_bias:
            grad_bias.add_(grad.sum(0))
        grad = grad.to(hidden.dtype)
        if want_hidden:
            torch.mm(grad, weight, out=grad_hidden[start:end])
        if want_in:
            torch.mm(grad, low_out.to(grad.dtype), out=grad_in[start:end])
    cast = (
        None if grad_weight is None else grad_weight.to(weight.dtype),
        None if grad_bias is None else grad_bias.to(bias.dtype),
        None if grad_out is None else grad_out.to(low_out.dtype),
    )
    return total, grad_hidden, cast[0], cast[1], grad_in, cast[2]


@functools.cache
def _function() -> Any:
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        """Sum of token cross-entropies of (hidden weight^T + bias + low_in low_out^T) against
        targets; gradients computed chunk by chunk in forward, scaled in backward."""

        @staticmethod
        def forward(ctx, hidden, weight, bias, low_in, low_out, targets):  # type: ignore[override]
            want = tuple(bool(flag) for flag in ctx.needs_input_grad[:5])
            total, *grads = _apply(hidden, weight, bias, low_in, low_out, targets, want)
            ctx.save_for_backward(*(g if g is not None else torch.empty(0) for g in grads))
            ctx.present = tuple(g is not None for g in grads)
            return total

        @staticmethod
        def backward(ctx, upstream):  # type: ignore[override]
            saved = ctx.saved_tensors
            grads = [
                (g * upstream.to(g.dtype)) if present else None
                for g, present in zip(saved, ctx.present)
            ]
            grad_hidden, grad_weight, grad_bias, grad_in, grad_out = grads
            return grad_hidden, grad_weight, grad_bias, grad_in, grad_out, None

    return LinearCrossEntropy


def linear_cross_entropy(
    hidden: Any,
    weight: Any,
    targets: Any,
    bias: Any = None,
    low_in: Any = None,
    low_out: Any = None,
) -> Any:
    """Sum over tokens of cross_entropy(hidden @ weight.T + bias + low_in @ low_out.T, targets)
    (IGNORE_INDEX skipped, fp32 log-sum-exp) without holding more than one chunk of logits."""
    import torch

    inputs = (hidden, weight, bias, low_in, low_out)
    if not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in inputs):
        return _apply(*inputs, targets, (False,) * 5)[0]
    return _function().apply(*inputs, targets)


def _liger() -> Any:
    """liger-kernel's fused linear cross-entropy, or None where it is not installed."""
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
    except ImportError:
        return None
    return liger_fused_linear_cross_entropy


class FusedHead:
    """The hidden states that reach a model's output-embedding module, captured by a forward
    pre-hook that gives the head an empty slice instead; then the head's loss, fused."""

    def __init__(self, model: Any):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.head = base.get_output_embeddings()
        self.active = False
        self.hidden: Any = None
        self._hook = self.head.register_forward_pre_hook(self._capture)

    def remove(self) -> None:
        """Take the hook off the head (the model is as before)."""
        self._hook.remove()

    def _capture(self, module: Any, args: tuple) -> tuple | None:
        if not self.active:
            return None
        self.hidden = args[0]
        return (args[0][..., :0, :], *args[1:])

    def factors(self) -> tuple[Any, Any, Any, Any] | None:
        """(weight, bias, adapter down-projection, scaled adapter up-projection) of a plain
        linear head or a linear head with one unmerged LoRA adapter; None for any other head."""
        import torch

        head = self.head
        if isinstance(head, torch.nn.Linear):
            return head.weight, head.bias, None, None
        base = getattr(head, "base_layer", None)
        names = list(getattr(head, "active_adapters", []) or [])
        if not isinstance(base, torch.nn.Linear) or len(names) != 1 or head.merged:
            return None
        name = names[0]
        if (
            name not in getattr(head, "lora_A", {})
            or getattr(head, "use_dora", {}).get(name)
            or getattr(head, "lora_variant", {}).get(name) is not None
            or getattr(head.lora_B[name], "bias", None) is not None
        ):
            return None
        return base.weight, base.bias, head, name

    def supported(self) -> bool:
        return self.factors() is not None

    def loss(self, model: Any, inputs: dict[str, Any], positions: Any, targets: Any) -> Any:
        """Sum of the token losses of the label tokens at `positions` (as logits_to_keep takes
        them) against `targets` [B, P], with the head's matmul fused into the loss."""
        factors = self.factors()
        assert factors is not None, "FusedHead.loss on an unsupported head"
        self.active = True
        try:
            model(**inputs, logits_to_keep=positions)
            hidden = self.hidden
        finally:
            self.active = False
            self.hidden = None
        hidden = hidden.reshape(-1, hidden.shape[-1])
        flat = targets.reshape(-1)
        weight, bias, lora, name = factors
        if lora is None:
            liger = _liger() if hidden.is_cuda else None
            if liger is not None:
                result = liger(
                    hidden, weight, flat, bias, ignore_index=IGNORE_INDEX, reduction="sum"
                )
                return (result[0] if isinstance(result, tuple) else result).float()
            return linear_cross_entropy(hidden, weight, flat, bias)
        low_in = lora.lora_A[name](lora.lora_dropout[name](hidden))
        low_out = lora.lora_B[name].weight * lora.scaling[name]
        return linear_cross_entropy(hidden, weight, flat, bias, low_in, low_out)

    def works(self, model: Any, vocab_size: int, plain_loss: Any) -> bool:
        """Whether the fused loss equals `plain_loss(model, inputs, positions, targets)` (the
        model's own logits) on a few tokens (eval mode, no gradient, RNG untouched)."""
        import torch

        if not self.supported():
            return False
        device = next(p.device for p in model.parameters() if p.device.type != "meta")
        ids = torch.arange(3, 11, device=device).remainder(vocab_size)[None]
        positions = torch.arange(0, 7, device=device)
        targets = ids[:, 1:]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                inputs = {"input_ids": ids, "use_cache": False}
                fused = self.loss(model, inputs, positions, targets).float()
                plain = plain_loss(model, inputs, positions, targets).float()
        except (TypeError, ValueError, RuntimeError, IndexError, AttributeError):
            return False
        finally:
            model.train(was_training)
        return agrees(plain, fused, model)
