"""The generic data sources: local files and hub datasets. Built-in datasets live in builtin.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from framework.core.errors import UserError
from framework.core.registry import DATASETS

FORMATS = {
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".txt": "text",
    ".conll": "conll",
}
SPLITS = ("train", "validation", "test")


@dataclass(kw_only=True)
class FilesParams:
    train: str | None = None  # path of the training file (json/jsonl/csv/tsv/parquet/txt/conll)
    validation: str | None = None  # null: ft holds out data.validation_split of train
    test: str | None = None  # optional final held-out split
    format: Literal["json", "csv", "parquet", "text", "conll"] | None = None  # null: from suffix
    # text files: one example per line, per blank-line-separated paragraph, or per file
    sample_by: Literal["line", "paragraph", "document"] = "line"


@DATASETS.register("files")
class Files:
    """Local files, one per split."""

    Params = FilesParams
    summary = "local json/jsonl/csv/parquet/text/conll files"

    @classmethod
    def problems(cls, params: FilesParams) -> list[str]:
        found = []
        if not params.train:
            found.append("data.source.train: missing; give the path of the training file")
        for split in SPLITS:
            value = getattr(params, split)
            if value is None:
                continue
            path = Path(value).expanduser()
            if not path.is_file():
                found.append(f"data.source.{split}='{value}': no such file ({path.resolve()})")
            elif params.format is None and path.suffix.lower() not in FORMATS:
                found.append(
                    f"data.source.{split}='{value}': unknown file type '{path.suffix}'; "
                    f"set data.source.format to one of {sorted(set(FORMATS.values()))}"
                )
        return found

    @classmethod
    def first_row(cls, params: FilesParams) -> dict[str, Any] | None:
        """The train file's first row, read without loading it (None if it cannot be)."""
        from framework.data.peek import first_row

        if not params.train or not Path(params.train).expanduser().is_file():
            return None
        path = Path(params.train).expanduser()
        return first_row(path, params.format or FORMATS.get(path.suffix.lower(), "json"))

    @classmethod
    def materialize(cls, params: FilesParams, cache_dir: Path) -> dict[str, Path]:
        problems = cls.problems(params)
        if problems:
            raise UserError(problems[0])
        return {
            split: Path(getattr(params, split)).expanduser().resolve()
            for split in SPLITS
            if getattr(params, split)
        }


@dataclass(kw_only=True)
class HubParams:
    path: str  # dataset id on the hub (or a loading-script-free local dataset folder)
    config_name: str | None = None
    revision: str | None = None
    train_split: str = "train"
    validation_split: str | None = "validation"  # null or absent: ft holds out a fraction
    test_split: str | None = None


@DATASETS.register("hub")
class Hub:
    """A dataset from the Hugging Face hub (needs network), via datasets.load_dataset."""

    Params = HubParams
    summary = "a hub dataset by name (datasets.load_dataset)"

    @classmethod
    def problems(cls, params: HubParams) -> list[str]:
        return []

    @classmethod
    def load(cls, params: HubParams, streaming: bool = False) -> dict[str, Any]:
        """The splits named by params; with `streaming`, as streams (datasets.IterableDataset)."""
        import datasets

        try:
            loaded = datasets.load_dataset(
                params.path, params.config_name, revision=params.revision, streaming=streaming
            )
        except Exception as error:  # offline, unknown name, ...: one line for the user
            raise UserError(
                f"data.source.path='{params.path}': cannot load hub dataset: "
                f"{str(error).splitlines()[0] if str(error) else type(error).__name__}"
            ) from None
        names = {
            "train": params.train_split,
            "validation": params.validation_split,
            "test": params.test_split,
        }
        splits = {}
        for split, name in names.items():
            if name and name in loaded:
                splits[split] = loaded[name]
            elif name and split == "train":
                raise UserError(
                    f"data.source.train_split='{name}': the dataset has splits {list(loaded)}"
                )
        return splits
