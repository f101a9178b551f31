"""Model families; importing this package registers them all."""

from framework.models import bart, bert, encoder_decoder, gpt2, llama, t5  # noqa: F401
