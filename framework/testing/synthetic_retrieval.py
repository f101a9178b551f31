"""Embedding-training triples and scored sentence pairs built from facts about people."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from framework.testing.synthetic_squad import (
    CITIES,
    COLOURS,
    COMPANY_A,
    COMPANY_B,
    FEMALE_NAMES,
    INSTRUMENTS,
    MALE_NAMES,
    PETS,
    PROFESSIONS,
    SURNAMES,
    _article,
    _pronouns,
)

Rows = list[dict[str, Any]]

# --------------------------------------------------------------------------------------------
# synthetic_retrieval
# --------------------------------------------------------------------------------------------

# relation -> (value pool, statement templates, question templates)
_RETRIEVAL_RELATIONS: dict[str, tuple[Sequence[str], tuple[str, ...], tuple[str, ...]]] = {
    "birthplace": (
        CITIES,
        (
            "{P} was born in {v}.",
            "{P}'s birthplace is {v}.",
            "{P} comes from {v}, where {she} was born.",
        ),
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
        (
            "{P}'s favourite colour is {v}.",
            "{P} likes the colour {v} best.",
            "Of all colours, {P} prefers {v}.",
        ),
        (
            "What is {P}'s favourite colour?",
            "Which colour does {P} like most?",
            "What colour does {P} prefer?",
        ),
    ),
    "instrument": (
        INSTRUMENTS,
        (
            "{P} plays the {v}.",
            "{P} has played the {v} since childhood.",
            "The {v} is the instrument {P} plays.",
        ),
        (
            "What instrument does {P} play?",
            "Which musical instrument does {P} play?",
            "What does {P} play in the band?",
        ),
    ),
    "pet": (
        PETS,
        ("{P} has a pet {v}.", "{P} lives with a {v} as a pet.", "At home, {P} keeps a {v}."),
        (
            "What pet does {P} have?",
            "What kind of animal does {P} keep as a pet?",
            "Which pet lives with {P}?",
        ),
    ),
}
_RELATION_NAMES = tuple(_RETRIEVAL_RELATIONS)


def _random_person(
    rng: random.Random, first: str | None = None, last: str | None = None
) -> tuple[str, bool]:
    female = rng.random() < 0.5 if first is None else first in FEMALE_NAMES
    first = first or rng.choice(FEMALE_NAMES if female else MALE_NAMES)
    return f"{first} {last or rng.choice(SURNAMES)}", female


def _similar_person(rng: random.Random, name: str) -> tuple[str, bool]:
    """Another person sharing the first name or the surname."""
    first, last = name.split(" ", 1)
    for _ in range(50):
        other = (
            _random_person(rng, first=first)
            if rng.random() < 0.5
            else _random_person(rng, last=last)
        )
        if other[0] != name:
            return other
    return _random_person(rng)


def _statement(
    rng: random.Random, person: tuple[str, bool], relation: str, value: str, avoid: int = -1
) -> tuple[str, int]:
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
            negative, _ = _statement(
                rng, person, other_rel, rng.choice(_RETRIEVAL_RELATIONS[other_rel][0])
            )
        else:  # similar name, same relation, different value
            negative, _ = _statement(
                rng, _similar_person(rng, person[0]), relation, _other_value(rng, relation, value)
            )
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
            s2, _ = _statement(
                rng, person, other_rel, rng.choice(_RETRIEVAL_RELATIONS[other_rel][0])
            )
        elif score == 0.2:
            s2, _ = _statement(
                rng, _similar_person(rng, person[0]), relation, _other_value(rng, relation, value)
            )
        else:
            stranger = person
            while stranger[0].split()[0] in person[0] or stranger[0].split()[1] in person[0]:
                stranger = _random_person(rng)
            s2, _ = _statement(
                rng, stranger, other_rel, rng.choice(_RETRIEVAL_RELATIONS[other_rel][0])
            )
        rows.append({"sentence1": s1, "sentence2": s2, "score": score})
    rng.shuffle(rows)
    return rows
