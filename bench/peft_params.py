"""Trainable parameters of every CPU-runnable PEFT preset on MiniLM (model preset `minilm`,
task seq_cls, 2 labels), built exactly as `ft train` builds them. Prints a Markdown table.

    .venv/bin/python bench/peft_params.py            # all presets in conf/peft
    .venv/bin/python bench/peft_params.py lora ia3   # some of them

Counts come from peft's get_nb_trainable_parameters(); "total" is base + adapter, so the
fraction is trainable / total. The 770-parameter classifier head (trained in full by peft for
seq_cls) is included in every row.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# The recipe only supplies the model (overridden to minilm); each preset's params are read from
# conf/peft/<preset>.yaml as they are, without the recipe's own peft overrides.
RECIPE = "seq_cls_tiny_bert_lora"


def main(argv: list) -> int:
    import torch
    import transformers
    import yaml
    from peft import get_peft_model

    from framework.config.path import load_run
    from framework.config.typecheck import check_dataclass
    from framework.core.registry import MODELS, PEFT_METHODS
    from framework.models.loading import load_model, resolve_checkpoint

    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    logging.disable(logging.WARNING)
    presets = argv or sorted(p.stem for p in (REPO / "conf" / "peft").glob("*.yaml"))
    run = load_run(RECIPE, ["model=minilm", "output_root=/tmp/ft-bench"])
    checkpoint = resolve_checkpoint(run.plugins.family, run.model)
    torch.manual_seed(0)
    base = load_model(
        run.plugins.family,
        run.model,
        checkpoint,
        "AutoModelForSequenceClassification",
        {"num_labels": 2},
        {"dtype": torch.float32},
    )
    base_params = sum(p.numel() for p in base.parameters())
    print(f"MiniLM (all-MiniLM-L6-v2) + 2-label head: {base_params:,} parameters\n")
    print("| preset | method | trainable | total | trainable % | build s |")
    print("|---|---|---:|---:|---:|---:|")
    for preset in presets:
        node = yaml.safe_load((REPO / "conf" / "peft" / f"{preset}.yaml").read_text())
        method = PEFT_METHODS.get(node["name"])
        if method.needs_cuda:
            print(f"| {preset} | {node['name']} | needs CUDA | | | |")
            continue
        reason = method.incompatibility("seq_cls", run.model.name)
        if reason:  # e.g. adaption_prompt is Llama/GPT-2 only
            print(f"| {preset} | {node['name']} | n/a: {reason} | | | |")
            continue
        problems: list = []
        params = check_dataclass(method.Params, node, "peft", str, problems)  # the preset as is
        assert not problems, problems
        start = time.perf_counter()
        model = get_peft_model(
            copy.deepcopy(base),
            method.build(params, "seq_cls", MODELS.get(run.model.name), base.config),
        )
        method.prepare_model(params, model, 100)
        seconds = time.perf_counter() - start
        trainable, total = model.get_nb_trainable_parameters()
        print(
            f"| {preset} | {node['name']} | {trainable:,} | {total:,} | "
            f"{100 * trainable / total:.3f} | {seconds:.1f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
