"""Library behaviour ft corrects for its runs: imports a run does not need."""

from __future__ import annotations

import sys


def skip_unused_deepspeed_import() -> None:
    """Accelerate's unwrap_model imports DeepSpeed whenever it is installed, only to test
    isinstance(model, DeepSpeedEngine). On a run that does not use it, that import costs about
    2 s and prints DeepSpeed's "Setting accelerator to CPU" warning. An engine can only exist
    once deepspeed was imported (a ZeRO run imports it when Accelerate prepares the model), so
    the test asks exactly that instead."""
    try:
        from accelerate.utils import other
    except ImportError:  # a different accelerate layout: nothing to correct
        return
    if hasattr(other, "is_deepspeed_available"):
        other.is_deepspeed_available = lambda: "deepspeed" in sys.modules
