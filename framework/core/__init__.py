"""The base every layer stands on: registries and plug-in loading, the typed parameter bases,
user errors and exit codes, the shared cache folder, metrics, and transformers' Auto tables."""
