"""Tasks; importing this package registers them all."""

from framework.tasks import (causal_lm, feature_extraction, question_ans, seq2seq_lm,  # noqa: F401
                             seq_cls, token_cls)
