"""One run: the command line's words -> a validated run -> its run directory -> training in this
process or `accelerate launch` of the trainer (several ranks)."""
