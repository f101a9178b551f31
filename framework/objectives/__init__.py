"""Objectives: what a run optimises, one registered class per objective (conf/objective/).

The task reads, tokenizes and collates the data; the objective turns a collated batch into a loss
and named step metrics. The six tasks' own losses are the `cross_entropy` objective (the default
when a recipe names none); the preference objectives (DPO and its relatives, SimPO, ORPO, KTO, a
Bradley-Terry reward model) read the paired or unpaired batches of the preference tasks."""
