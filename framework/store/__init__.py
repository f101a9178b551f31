"""What ft keeps on disk: the run directory and its file names, secret redaction, checkpoints and
the run's log file. Used by every layer above; uses only framework.core."""
