"""Configuration: Hydra composition, the typed schema, cross-group checks and resume checks. No torch."""
