"""`ft`: the command line. Compose once with Hydra, validate into a typed RunConfig, then act.

ft train RECIPE [key=value ...]     train (in-process, or `accelerate launch` for several ranks)
ft validate RECIPE [key=value ...]  check the composed config only (never imports torch)
ft show RECIPE [key=value ...]      print the composed, resolved config
ft estimate RECIPE [key=value ...]  peak memory per device, from the meta device (no weights
                                    read); --device-memory 24GiB: the cheapest fit
ft list [GROUP] [--task T]          config groups, presets, recipes and registry entries
ft eval RUN_DIR ...                 evaluate a trained adapter (or several) on a split
ft predict RUN_DIR --input F        write predictions (embeddings for feature_extraction)
ft merge RUN_DIR                    write a merged full model (methods that can merge)
ft report RUN_DIR ... | latest RECIPE   one run's metrics before/after, steps, time, best
                                    eval; several runs (or a sweep dir): one ranked table
ft sweep report SWEEP_DIR           a sweep's trials (status, metric, time) and the best one

--config-dir DIR (train/validate/show)  also look for presets and recipes in DIR, before
                                    the shipped ones (a preset of the same name wins)
eval "$(ft --completion bash)"      tab completion (also Hydra's: ft -sc install=bash)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from framework.core.errors import run_guarded

HYDRA_FLAGS = (
    "-m",
    "--multirun",
    "--cfg",
    "-c",
    "--info",
    "-i",
    "--resolve",
    "--package",
    "-p",
    "--shell-completion",
    "-sc",
    "--config-dir",
    "-cd",
    "--hydra-help",
)

OVERRIDE_HELP = """\
overrides (Hydra syntax):
  group=preset          pick a preset: peft=ia3  hardware=cpu  task=seq_cls
  group.key=value       set a key: peft.r=32  train.lr=3e-4  data.max_length=128
  +group.key=value      add a key the preset does not have (checked by the schema)
  -m group=a,b ...      sweep (Hydra multirun): -m peft=lora,ia3 train.lr=1e-4,3e-4
  --cfg job             print the composed config and exit (Hydra's own flag)
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def groups_help() -> str:
    from framework.config.recipe import group_presets, recipe_groups, recipe_names

    lines = ["config groups and presets (group=preset):"]
    for group in recipe_groups():
        lines.append(f"  {group:<9} {', '.join(group_presets(group))}")
    lines.append(f"recipes: {', '.join(recipe_names())}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ft",
        formatter_class=_Formatter,
        description="ft: YAML-config-driven fine-tuning of Hugging Face models with PEFT adapters.",
        epilog=groups_help() + "\n\n" + OVERRIDE_HELP,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def recipe_command(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            formatter_class=_Formatter,
            epilog=groups_help() + "\n\n" + OVERRIDE_HELP,
        )
        cmd.add_argument("recipe", help="a recipe name from recipes/ or a path to a recipe YAML")
        cmd.add_argument("overrides", nargs="*", help="Hydra overrides (see below)")
        return cmd

    recipe_command("train", "train a recipe")
    validate = recipe_command(
        "validate", "compose and check a recipe; exit 2 with one line per problem"
    )
    validate.add_argument(
        "--data",
        action="store_true",
        help="also read the data as training would (columns, labels, token "
        "lengths) with the model's tokenizer; the model is not loaded",
    )
    recipe_command("show", "print the composed, resolved config of a recipe")
    est = recipe_command(
        "estimate",
        "estimate peak memory per device (meta device; no weights read); exit 1 if it does not fit",
    )
    est.add_argument(
        "--device-memory",
        metavar="SIZE",
        help="memory of one device, e.g. 24GiB (default: this machine's GPU 0, else "
        "its RAM); also prints the cheapest preset and micro-batch that fit",
    )
    est.add_argument(
        "--data",
        action="store_true",
        help="read and tokenize the train split (the model is not loaded) and size the run's "
        "own longest micro-batch: packed tokens, label positions (default: every "
        "micro-batch full, every position labelled)",
    )
    listing = sub.add_parser("list", help="list config groups, presets, recipes and registries")
    listing.add_argument(
        "group",
        nargs="?",
        help="one group (model, peft, task, hardware, data, train, logger) or 'recipes'",
    )
    listing.add_argument("--task", help="with 'peft': only methods that serve this task")
    ev = sub.add_parser("eval", help="evaluate trained adapters on a split of their data")
    ev.add_argument("run_dirs", nargs="+", type=Path, help="run directories of finished runs")
    ev.add_argument("--split", default="validation", help="validation (default) or test")
    hardware_help = (
        "a hardware preset (ft list hardware) for the device and precision; default: the GPU "
        "when there is one (at the run's own precision), else CPU"
    )
    ev.add_argument("--hardware", metavar="PRESET", help=hardware_help)
    pr = sub.add_parser("predict", help="run a trained adapter on a JSONL file of inputs")
    pr.add_argument("run_dir", type=Path)
    pr.add_argument("--input", type=Path, required=True, help="JSONL rows with the task's columns")
    pr.add_argument("--output", type=Path, help="JSONL output (default: stdout)")
    pr.add_argument("--hardware", metavar="PRESET", help=hardware_help)
    mg = sub.add_parser("merge", help="merge the adapter into the base model (safetensors)")
    mg.add_argument("run_dir", type=Path)
    mg.add_argument("--output", type=Path, help="default: RUN_DIR/merged")
    rp = sub.add_parser(
        "report",
        help="a finished run's metrics before/after training; several "
        "runs (or a sweep directory): one table ranked by the "
        "task's primary metric",
    )
    rp.add_argument(
        "runs", nargs="+", help="run directories, directories of runs, or: latest RECIPE"
    )
    rp.add_argument(
        "--plot",
        type=Path,
        metavar="OUT.png",
        help="also draw the runs' curves into one PNG (needs matplotlib)",
    )
    rp.add_argument("--output-root", default="outputs", help="where `latest RECIPE` looks")
    sw = sub.add_parser("sweep", help="sweeps (ft train RECIPE -m ...): `ft sweep report DIR`")
    sw.add_argument("action", choices=["report"], help="report: the table of trials and the best")
    sw.add_argument("sweep_dir", type=Path, help="the sweep directory `ft train -m` printed")
    return parser


def cmd_validate(args: argparse.Namespace) -> int:
    from framework.commands.validate import validate

    print(validate(args.recipe, args.overrides, getattr(args, "data", False)))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from framework.commands.validate import show

    print(show(args.recipe, args.overrides))
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    from framework.commands.estimate import print_estimate

    return print_estimate(args.recipe, args.overrides, args.device_memory, args.data)


def cmd_train(args: argparse.Namespace) -> int:
    from framework.config.path import load_run
    from framework.run.execute import execute

    execute(load_run(args.recipe, args.overrides))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from framework.commands.listing import print_listing

    print_listing(args.group, args.task)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from framework.commands.inference import evaluate_runs

    for run_dir, scores in evaluate_runs(args.run_dirs, args.split, args.hardware).items():
        print(json.dumps({"run_dir": run_dir, "split": args.split, **scores}))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from framework.commands.inference import predict_file

    count = predict_file(args.run_dir, args.input, args.output, args.hardware)
    if args.output:
        print(f"wrote {count} predictions to {args.output}", file=sys.stderr)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from framework.commands.inference import merge_adapter

    output = merge_adapter(args.run_dir, args.output)
    print(f"merged model written to {output}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from framework.commands.report import print_report

    print_report(args.runs, args.output_root, args.plot)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from framework.sweep.summary import report

    return report(args.sweep_dir)


COMMANDS = {
    "train": cmd_train,
    "validate": cmd_validate,
    "show": cmd_show,
    "list": cmd_list,
    "estimate": cmd_estimate,
    "sweep": cmd_sweep,
    "eval": cmd_eval,
    "predict": cmd_predict,
    "merge": cmd_merge,
    "report": cmd_report,
}


def config_dirs_to_override(argv: list[str]) -> list[str]:
    """`ft train|validate|show ... --config-dir DIR [-cd DIR2]` -> the same words with one
    `hydra.searchpath=[file://DIR,...]` override instead (compose puts those dirs before the
    shipped presets). Left alone when other Hydra flags ask for Hydra's own command line."""
    if argv[:1] not in (["train"], ["validate"], ["show"], ["estimate"]):
        return argv
    words, dirs = [], []
    index = 0
    while index < len(argv):
        word = argv[index]
        flag, _, value = word.partition("=")
        if flag in ("--config-dir", "-cd"):
            if not value and index + 1 < len(argv):
                index += 1
                value = argv[index]
            dirs.append(str(Path(value).expanduser().resolve()))
        else:
            words.append(word)
        index += 1
    if not dirs or any(w.split("=", 1)[0] in HYDRA_FLAGS for w in words[1:]):
        return argv
    return words + ["hydra.searchpath=[" + ",".join(f"'file://{d}'" for d in dirs) + "]"]


def completion(argv: list[str]) -> int | None:
    """`ft --completion bash` / `ft -sc install=bash` print the bash completion script;
    `ft -sc query=bash` (what the script calls) prints the words completing $COMP_LINE."""
    from framework.commands.listing import BASH_SCRIPT, completions

    if argv[:1] == ["--completion"] or (
        argv[:1] in (["-sc"], ["--shell-completion"]) and argv[1:2] == ["install=bash"]
    ):
        shell = argv[1] if argv[:1] == ["--completion"] and len(argv) > 1 else "bash"
        if shell not in ("bash", "install=bash"):
            print(f"error: --completion {shell}: only bash is supported", file=sys.stderr)
            return 2
        print(BASH_SCRIPT, end="")
        return 0
    if argv[:1] in (["-sc"], ["--shell-completion"]) and argv[1:2] == ["query=bash"]:
        line = os.environ.get("COMP_LINE", "ft ")
        point = int(os.environ.get("COMP_POINT", len(line)))
        print("\n".join(completions(line[:point])))
        return 0
    return None


def main(argv: list[str] | None = None) -> int:
    """`ft ...`: parse, run the sub-command, map expected errors to one line and an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    answered = completion(argv)
    if answered is not None:
        return answered
    argv = config_dirs_to_override(argv)
    if argv[:1] == ["train"] and any(a.split("=", 1)[0] in HYDRA_FLAGS for a in argv[1:]):
        from framework.cli.hydra_door import run_hydra_app

        return run_hydra_app(argv[1:])
    if argv[:1] == ["validate"] and "--data" in argv:  # after the overrides, wherever it was given
        argv = [a for a in argv if a != "--data"] + ["--data"]
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return 0
    try:
        return run_guarded(lambda: COMMANDS[args.command](args))
    except BrokenPipeError:  # `ft list | head`: the reader left; stop quietly, no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
