"""Tasks, one registered class per PEFT task type. framework.plugins imports every module here."""
