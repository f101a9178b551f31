"""ft's shipped config presets (one folder per config group). Installed as the package
framework.conf, so that Hydra finds them on its pkg:// search path."""
