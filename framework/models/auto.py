"""The `auto` family: no override. Tasks, target modules, task heads and pad token all come from
the checkpoint's config.json and the tables of transformers and peft (see base.py)."""

from __future__ import annotations

from framework.core.registry import MODELS
from framework.models.base import ModelFamily


@MODELS.register("auto")
class Auto(ModelFamily):
    summary = "any checkpoint: everything from its config.json (peft's default target modules)"
