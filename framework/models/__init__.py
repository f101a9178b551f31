"""Models: reading a checkpoint's architecture (config.json, transformers' and peft's tables,
the meta device), loading it, and the optional families that override ft's defaults for one
architecture. framework.core.plugins imports every module here."""
