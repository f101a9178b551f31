"""PEFT methods; importing this package registers them all (no torch or peft import here)."""

from framework.peft import (adalora, ia3, ln_tuning, lora, lycoris, more, orthogonal,  # noqa: F401
                            prompt, spectral, vera)
