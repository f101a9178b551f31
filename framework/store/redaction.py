"""Secrets never reach a file or a log line: keys that name a secret (token, api_key, password, ...),
values that look like one (hf_..., sk-...), and values registered because they came from a
secret-looking environment variable are replaced by REDACTED in configs, logs and printouts."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

REDACTED = "***REDACTED***"


# A key whose name has one of these words (as a whole _-separated part) holds a secret.
# "tokens" is not one: it names token_cls's word column (data.columns.tokens) and token counts.
_SECRET_KEY = re.compile(
    r"(^|[_\-.])(token|(?:api_?key|key|secret|password|passwd|credential)s?)"
    r"($|[_\-.])",
    re.IGNORECASE,
)


# Values that look like well-known secrets wherever they appear (HF and OpenAI-style tokens), of
# any length: `hf_` + letters/digits, `sk-` + letters/digits/-/_, with an upper-case letter (real
# tokens are mixed case; `hf_models` or `task-sk-1` in a path are not tokens) or 20+ characters.
_SECRET_VALUE = re.compile(r"\b(hf_[A-Za-z0-9]+|sk-[A-Za-z0-9][A-Za-z0-9_\-]*)(?![A-Za-z0-9_])")


def _token_like(match: re.Match[str]) -> str:
    body = match.group(0)[3:]
    return REDACTED if len(body) >= 20 or any(c.isupper() for c in body) else match.group(0)


# Secret values known by where they came from (an ${oc.env:...} lookup of a secret-looking
# variable, see register_secret), and the shortest value that is also replaced inside longer
# strings (a shorter one only where it is the whole value: "1" must not vanish from every line).
_REGISTERED: set = set()


MIN_SUBSTRING_SECRET = 8


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def register_secret(value: Any) -> None:
    """Redact this value wherever it appears from now on (in this process)."""
    if isinstance(value, str) and value and value != REDACTED:
        _REGISTERED.add(value)


def _known_secrets() -> list[str]:
    """Registered secrets and the values of secret-looking environment variables (HF_TOKEN,
    WANDB_API_KEY, ...): whatever path such a value took into a config or a log line, it is
    redacted. Longest first, so that a secret containing another is replaced whole."""
    found = set(_REGISTERED)
    found.update(v for k, v in os.environ.items() if v and is_secret_key(k))
    return sorted(found, key=len, reverse=True)


def _redact_string(text: str) -> str:
    for secret in _known_secrets():
        if text == secret:
            return REDACTED
        if len(secret) >= MIN_SUBSTRING_SECRET and secret in text:
            text = text.replace(secret, REDACTED)
    return _SECRET_VALUE.sub(_token_like, text)


def redact(node: Any, key: str = "") -> Any:
    """Copy of a config tree with secret-looking keys and values replaced."""
    if isinstance(node, dict):
        return {k: redact(v, str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [redact(v, key) for v in node]
    if isinstance(node, str):
        if is_secret_key(key) and node:
            return REDACTED
        return redact_text(node)
    return node


def redact_text(text: str) -> str:
    """Redact secret-looking values and `key=value` pairs with secret keys in a log line."""
    text = _redact_string(text)
    return re.sub(
        r"([\w.\-]*(?:token|key|secret|password)[\w.\-]*)=(\S+)",
        lambda m: (
            f"{m.group(1)}={REDACTED}" if is_secret_key(m.group(1).split(".")[-1]) else m.group(0)
        ),
        text,
        flags=re.IGNORECASE,
    )


def redact_printed(text: str) -> str:
    """A printout that may be YAML (Hydra's --cfg): key-aware where it parses as a mapping."""
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError:
        tree = None
    if isinstance(tree, dict) and redact(tree) != tree:
        return yaml.safe_dump(redact(tree), sort_keys=False)
    return redact_text(text)


def redact_yaml_file(path: Path) -> None:
    """Rewrite a YAML file written by another tool (Hydra's .hydra/*.yaml, multirun.yaml) with its
    secrets redacted; atomic, and untouched when it holds none."""
    text = Path(path).read_text()
    try:
        tree = yaml.safe_load(text)
        clean = text if redact(tree) == tree else yaml.safe_dump(redact(tree), sort_keys=False)
    except yaml.YAMLError:
        clean = redact_text(text)
    if clean != text:
        tmp = Path(path).with_name(f".{Path(path).name}.redacting")
        tmp.write_text(clean)
        os.replace(tmp, path)
