"""Several sources in one run (data=mix): sampled by weight or concatenated by count, seeded;
each refusal one line naming its key; per-source examples and tokens in the log and in
`ft validate --data`, per-source eval metrics in metrics.jsonl and `ft report`."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from framework.core.errors import UserError
from framework.core.params import DataConfig, SourceConfig
from tests.helpers import metrics, write_jsonl

WEIGHTS = (0.6, 0.3, 0.1)


def sources(*shares: dict) -> list[SourceConfig]:
    return [SourceConfig(name="files", id=f"s{i}", **share) for i, share in enumerate(shares)]


def marked(n: int, index: int):
    import datasets

    return datasets.Dataset.from_dict({"source": [index] * n, "row": list(range(n))})


def mixed_order(seed: int, strategy: str = "first_exhausted") -> list[int]:
    from framework.data.mix import mix_train

    data = DataConfig(name="mix", shuffle_seed=seed, stopping_strategy=strategy)
    parts = [marked(10_000, i) for i in range(3)]
    return mix_train(parts, sources(*({"weight": w} for w in WEIGHTS)), data)["source"]


def test_weighted_sources_are_sampled_in_proportion_and_reproducibly():
    order = mixed_order(seed=5)
    assert len(order) >= 10_000
    shares = Counter(order[:10_000])
    for index, weight in enumerate(WEIGHTS):
        assert abs(shares[index] / 10_000 - weight) <= 0.02, (index, shares)
    assert mixed_order(seed=5) == order  # the same seed, the same mix
    assert mixed_order(seed=6) != order


def test_weights_are_relative_and_counts_take_or_repeat_examples():
    from framework.data.mix import mix_train, weights_of

    assert weights_of(sources({"weight": 6}, {"weight": 3}, {"weight": 1})) == pytest.approx(
        list(WEIGHTS)
    )
    data = DataConfig(name="mix", shuffle_seed=1)
    mix = mix_train(
        [marked(50, 0), marked(10, 1), marked(30, 2)],
        sources({"count": 20}, {"count": 25}, {}),
        data,
    )
    assert Counter(mix["source"]) == {0: 20, 1: 25, 2: 30}
    rows = [r for s, r in zip(mix["source"], mix["row"]) if s == 1]
    assert sorted(Counter(rows).values()) == [2] * 5 + [3] * 5  # twice over, then 5 again
    picked = [r for s, r in zip(mix["source"], mix["row"]) if s == 0]
    assert len(set(picked)) == 20 and picked != list(range(20))  # a seeded sample


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["data.sources=[{name: files, source: {train: A}, weight: 0}]"],
            "data.sources[0].weight=0.0: must be > 0",
        ),
        (
            ["data.sources=[{name: files, source: {train: A}, weight: 0.5, count: 3}]"],
            "data.sources[0]: both weight=0.5 and count=3; give one",
        ),
        (
            [
                "data.sources=[{name: files, source: {train: A}, weight: 1}, {name: files, source: {train: B}}]"
            ],
            "data.sources[1].weight: missing; give every source a weight",
        ),
        (
            [
                "data.sources=[{name: files, id: a, source: {train: A}}, {name: files, id: a, source: {train: B}}]"
            ],
            "data.sources: id 'a' is used twice",
        ),
        (
            ["data.sources=[{name: filez, source: {train: A}}]"],
            "data.sources[0].name: unknown built-in dataset 'filez'",
        ),
        (
            ["data.sources=[{name: files, source: {train: A, colour: red}}]"],
            "data.sources[0].source.colour: unknown key",
        ),
        (["data.sources=[{name: files, source: {}}]"], "data.sources[0].source.train: missing"),
        (["data.sources=[]"], "data.sources: missing; data=mix needs a list of sources"),
    ],
)
def test_each_bad_source_is_one_line_naming_its_key(tmp_path, overrides, message):
    from framework.config.path import load_run

    for name in "AB":
        write_jsonl(tmp_path / f"{name}.jsonl", [{"text": "x"}])
    overrides = [
        o.replace("train: A", f"train: {tmp_path}/A.jsonl").replace(
            "train: B", f"train: {tmp_path}/B.jsonl"
        )
        for o in overrides
    ]
    with pytest.raises(UserError) as caught:
        load_run("sft_tiny_llama_lora", ["data=mix", *overrides])
    assert message in str(caught.value), str(caught.value)


def test_sources_without_data_mix_are_refused(tmp_path):
    from framework.config.path import load_run

    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    with pytest.raises(
        UserError, match=r"data.sources: set with data=files; several sources need data=mix"
    ):
        load_run(
            "sft_tiny_llama_lora",
            [
                "data=files",
                f"data.source.train={path}",
                f"++data.sources=[{{name: files, source: {{train: {path}}}}}]",
            ],
        )


# ---- a run of three sources ------------------------------------------------------------------
def three_sources(folder):
    """Three sources of different shapes and columns: chat messages, prompt/answer pairs under
    other column names, and plain prompt/completion rows; each with its own validation file."""

    def chat(i):
        return {
            "messages": [
                {"role": "user", "content": f"hi {i}"},
                {"role": "assistant", "content": f"hello {i}"},
            ]
        }

    def pair(i):
        return {"question": f"what is {i} plus one", "answer": f"{i + 1}"}

    def plain(i):
        return {"prompt": f"count to {i}", "completion": " ".join(map(str, range(i % 5 + 1)))}

    files = {}
    for name, row, n in (("chat", chat, 120), ("pairs", pair, 60), ("plain", plain, 20)):
        files[name] = (
            write_jsonl(folder / f"{name}.jsonl", [row(i) for i in range(n)]),
            write_jsonl(folder / f"{name}_val.jsonl", [row(1000 + i) for i in range(6)]),
        )
    return files


def mix_overrides(files, run_dir=None):
    entries = []
    for (name, (train, val)), weight in zip(files.items(), WEIGHTS):
        columns = "columns: {prompt: question, completion: answer}, " if name == "pairs" else ""
        entries.append(
            f"{{name: files, {columns}source: {{train: {train}, validation: {val}}}, weight: {weight}}}"
        )
    return [
        "data=mix",
        f"data.sources=[{', '.join(entries)}]",
        "data.max_length=32",
        "task.chat_template=chatml",
        "train.max_steps=2",
        "train.log_every=1",
        *([f"run_dir={run_dir}"] if run_dir else []),
    ]


def test_validate_data_gives_examples_and_tokens_per_source(tmp_path, capsys):
    from framework.cli.app import main

    files = three_sources(tmp_path)
    assert main(["validate", "sft_tiny_llama_lora", "--data", *mix_overrides(files)]) == 0
    out = capsys.readouterr().out
    for name, n in (("chat", 120), ("pairs", 60), ("plain", 20)):
        assert f"{name} train: {n} examples from source '{name}'" in out, out
        line = next(x for x in out.splitlines() if x.startswith(f"source {name} (weight"))
        assert f"train: {n} examples, " in line and "validation: 6 examples, " in line, line
        assert "mixed train: " in line and " tokens" in line, line
    assert "columns question, answer" in out


def test_a_mixed_run_logs_and_evaluates_each_source(tmp_path, one_torch_thread, capsys):
    from framework.cli.app import main

    files = three_sources(tmp_path / "data")
    run_dir = tmp_path / "run"
    assert main(["train", "sft_tiny_llama_lora", *mix_overrides(files, run_dir)]) == 0
    log = (run_dir / "train.log").read_text()
    for name in files:
        line = next(x for x in log.splitlines() if f"data: source {name} (weight" in x)
        assert "mixed train: " in line and " tokens" in line, line
    assert "sampled by weight (normalised: chat 0.600, pairs 0.300, plain 0.100" in log
    final = metrics(run_dir, "eval")[-1]
    for name in files:
        assert final[f"eval/{name}/eval_loss"] > 0 and final[f"eval/{name}/perplexity"] > 1
    assert "eval_loss" in final  # and the whole held-out data, unprefixed (keep_best, sweeps)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "eval/pairs/perplexity" in summary["final"]
    capsys.readouterr()
    assert main(["report", str(run_dir)]) == 0
    report = capsys.readouterr().out
    assert "per source (eval/<source>/<metric>):" in report, report
    for name in files:  # a row per source with its final metrics
        row = next(line for line in report.splitlines() if line.startswith(f"{name} "))
        assert f"{final[f'eval/{name}/perplexity']:.4f}" in row, report
    # ft eval scores the trained adapter the same way: the whole held-out data and each source.
    assert main(["eval", str(run_dir)]) == 0
    scored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("eval_loss", *(f"eval/{name}/perplexity" for name in files)):
        assert scored[key] == pytest.approx(final[key], rel=1e-4), key


def test_estimate_data_shape_is_the_mixed_train_split_and_a_stream_is_refused(tmp_path):
    """`ft estimate --data` sizes the run by the data training sees: the mix of every source
    (not the first source alone); a stream, whose lengths are unknown until read, is refused in
    one line naming data.streaming."""
    from framework.config.path import load_run
    from framework.core.errors import UserError
    from framework.training.memory import read_data_shape
    from framework.training.run_data import prepare_data

    run = load_run("sft_tiny_llama_lora", mix_overrides(three_sources(tmp_path)))
    shape = read_data_shape(run)
    family = run.plugins.family
    from framework.models.loading import load_tokenizer, resolve_checkpoint

    tokenizer = load_tokenizer(family, run.model, resolve_checkpoint(family, run.model))
    train = prepare_data(run, tokenizer, family).train
    assert shape.lengths == tuple(sorted(map(len, train["input_ids"]), reverse=True))
    streamed = load_run(
        "sft_tiny_llama_lora",
        [
            "data=files",
            f"data.source.train={three_sources(tmp_path)['chat'][0]}",
            "data.streaming=true",
            "train.max_steps=2",
            "data.max_eval_examples=2",
        ],
    )
    with pytest.raises(UserError, match=r"ft estimate --data: data.streaming=true reads"):
        read_data_shape(streamed)
