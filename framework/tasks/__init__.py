"""Tasks, one registered class per PEFT task type. framework.core.plugins imports every module here."""
