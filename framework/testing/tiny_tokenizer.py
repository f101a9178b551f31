"""Train a small tokenizer on the fly for tiny test models (no download needed).

bert: lower-cased WordPiece with [CLS]/[SEP] (clean offsets for span tasks);
llama/t5: byte-level BPE (any text round-trips), with BOS or EOS added the way each family does.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

_SEED_TEXT = """
The quick brown fox jumps over the lazy dog. A film review says the movie was great, fresh and
funny, or rotten, dull and too long. What is the capital of France? Paris is the capital of France.
Who wrote the book? The author was born in London in 1950 and worked as a teacher, a doctor, an
engineer and a painter. Question answer context title summary translate English German French.
I love this film. I hate this movie. It was a wonderful, moving and beautiful story with a strong
cast; the plot was weak and the acting terrible. Hello! How are you today? I am fine, thank you.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 20 30 100 1000 2024 one two three four five six seven eight
nine ten. Colours: red green blue yellow black white. Cities: Berlin Madrid Rome Tokyo Lima Oslo.
Companies hire people; people live in cities; the river flows to the sea; the sun is a star.
"""


def _corpus() -> Iterator[str]:
    words = sorted(set(_SEED_TEXT.replace("\n", " ").split()))
    yield from _SEED_TEXT.strip().splitlines()
    # Word pairs give BPE merges for common words in many positions.
    for a, b in itertools.islice(itertools.product(words, repeat=2), 20000):
        yield f"{a} {b}"


def has_chat_template(kind: str) -> bool:
    """Whether the tiny tokenizer of this kind is given a chat template (the decoders' ChatML)."""
    return kind == "llama"


def train_tokenizer(kind: str, vocab_size: int) -> Any:
    """Return a PreTrainedTokenizerFast trained on a small built-in English corpus."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    if kind == "bert":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
        tok.train_from_iterator(_corpus(), trainer)
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            pad_token="[PAD]",
            unk_token="[UNK]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
            model_max_length=512,
        )

    specials = ["<pad>", "</s>", "<unk>"] + (
        ["<s>", "<|im_start|>", "<|im_end|>"] if kind == "llama" else []
    )
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer)
    if kind == "t5":
        eos_id = tok.token_to_id("</s>")
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos_id)]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            pad_token="<pad>",
            eos_token="</s>",
            unk_token="<unk>",
            model_max_length=512,
        )
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=512,
    )
    if has_chat_template(kind):  # ChatML, so that SFT on tiny models runs the chat-template path
        tokenizer.chat_template = (
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
        )
    return tokenizer
