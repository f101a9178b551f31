"""Names and values that a task's collated batches share with the objectives that read them
(the two plug-in packages never import each other)."""

IGNORE_INDEX = -100  # a label position that carries no loss
TARGETS_KEY = "target_positions"  # collator-made: positions t whose label t+1 is trained
KL_PREFIX = "kl_"  # KTO's mismatched (prompt, completion) rows: kl_input_ids, kl_labels, ...
DESIRABLE_KEY = "desirable"  # KTO: whether each row's completion is a desirable one
