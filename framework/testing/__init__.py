"""Tiny random-init models of any architecture, a tokenizer trained on the fly, and synthetic data:
what tests and the tiny recipes use instead of downloads (no hub, no network)."""
