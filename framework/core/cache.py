"""ft's cache directory for things it builds or converts once (tiny models, GGUF conversions,
built-in datasets), and an atomic way to fill it. Reads no ft settings."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    """$XDG_CACHE_HOME/ft, else ~/.cache/ft (the XDG convention; not a config setting)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ft"


def atomic_dir(target: Path, build: Callable[[Path], None]) -> Path:
    """Build into a temp dir beside target and rename, so a half-built cache is never used;
    when several processes race, the first rename wins and the others use its result."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        build(tmp)
        os.replace(tmp, target)
    except OSError:
        if not target.is_dir():  # another process did not win the race: a real failure
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
