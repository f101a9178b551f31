"""Hardware profiles, one registered class each. framework.plugins imports every module here."""
