"""Model families: optional per-family knowledge a checkpoint's config.json cannot tell (target
modules, tiny test configs, tokenizer fix-ups). framework.plugins imports every module here."""
