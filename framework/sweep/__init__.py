"""Sweeps (`ft train RECIPE -m ...`): planning and pre-validation of the jobs, each trial as a run
of its own, the summary table, and the Optuna sweeper's settings."""
