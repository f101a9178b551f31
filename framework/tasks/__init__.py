"""Tasks; importing this package registers them all."""

from framework.tasks import causal_lm, seq_cls  # noqa: F401
