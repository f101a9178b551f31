"""Hardware profiles, one registered class each. framework.core.plugins imports every module here."""
