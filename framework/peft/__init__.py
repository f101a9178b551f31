"""PEFT methods, one registered class each (no torch or peft import at import time).
framework.core.plugins imports every module here."""
