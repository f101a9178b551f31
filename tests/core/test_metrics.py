"""Tests for framework.core.metrics: hand-computed cases (each derivation written next to its
numbers), 300 seeded random cases per metric against the numbers of the hand-written
implementations they replaced (tests/core/metric_cases.py), and the reference packages."""

from __future__ import annotations

import ast
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from framework.core import metrics
from framework.core.metrics import (
    bleu_chrf,
    classification_metrics,
    entity_metrics,
    get_entities,
    multilabel_metrics,
    normalize_answer,
    regression_metrics,
    retrieval_metrics,
    rouge_scores,
    squad_metrics,
)
from tests.core.metric_cases import CASES_PER_METRIC, RECORDED_FILE, metric_cases

approx = pytest.approx

# sacreBLEU README example (hypotheses and the first reference stream).
_MT_HYPS = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
_MT_REFS = ["The dog bit the man.", "It was not unexpected.", "The man bit him first."]


def _imported_packages(nodes) -> set[str]:
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_libraries_compute_and_are_imported_only_inside_the_functions():
    # Static check of the source (a subprocess import would cost ~1 s of the test budget).
    tree = ast.parse(Path(metrics.__file__).read_text())
    at_import_time = _imported_packages(tree.body)
    anywhere = _imported_packages(ast.walk(tree))
    libraries = {"sklearn", "scipy", "seqeval", "rouge_score", "sacrebleu"}
    assert "numpy" in at_import_time  # the walk does see the real imports
    assert not at_import_time & (libraries | {"torch"})  # `ft validate` stays cheap, torch-free
    assert libraries <= anywhere
    assert not anywhere & {"torch", "evaluate", "datasets"}  # no hub metric scripts either


def test_metrics_module_stays_a_thin_layer():
    # Issue 18, Must show 5: the libraries compute, so the module stays at most 250 lines.
    assert len(Path(metrics.__file__).read_text().splitlines()) <= 250


# ---------------------------------------------------------------------------------------------
# classification


def test_classification_macro_f1_over_present_classes_only():
    # preds [0,1,1,2] vs labels [0,1,2,2]; class 3 exists (num_labels=4) but never occurs.
    # class 0: TP1 FP0 FN0 -> 1; class 1: TP1 FP1 FN0 -> 2/3; class 2: TP1 FP0 FN1 -> 2/3.
    # Macro over {0,1,2} = 7/9 (averaging class 3 in as 0 would give 7/12).
    m = classification_metrics([0, 1, 1, 2], [0, 1, 2, 2], num_labels=4)
    assert m["accuracy"] == approx(0.75)
    assert m["macro_f1"] == approx(7 / 9)


def test_classification_class_without_tp_scores_zero():
    # class 0: TP1 FP1 -> 2/3; class 1 (in labels, never predicted): F1 0. Macro = 1/3.
    m = classification_metrics([0, 0], [1, 0], num_labels=2)
    assert m == {"accuracy": approx(0.5), "macro_f1": approx(1 / 3)}


def test_classification_perfect_and_validation():
    assert classification_metrics([2, 0, 1], [2, 0, 1], 3) == {"accuracy": 1.0, "macro_f1": 1.0}
    with pytest.raises(ValueError, match="outside"):
        classification_metrics([0, 3], [0, 1], num_labels=3)
    with pytest.raises(ValueError, match="align"):
        classification_metrics([0, 1], [0], num_labels=2)


# ---------------------------------------------------------------------------------------------
# multi-label


def test_multilabel_hand_case():
    preds = [[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0]]
    labels = [[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]]
    # col0: TP2 -> 1; col1: TP1 FP1 -> 2/3; col2: FP1 -> 0; col3: never positive -> not averaged.
    # micro: TP3 FP2 FN0 -> 6/8. Only row 2 is exactly right -> subset accuracy 1/3.
    m = multilabel_metrics(preds, labels)
    assert m["macro_f1"] == approx((1 + 2 / 3 + 0) / 3)
    assert m["micro_f1"] == approx(0.75)
    assert m["subset_accuracy"] == approx(1 / 3)


def test_multilabel_single_label_column_scores_the_positive_class():
    # One column: sklearn would read it as a binary target and average in the 0 class.
    # TP1 (row 0) FP1 (row 1) FN1 (row 2) -> F1 1/2 both ways; only row 0 exactly right.
    m = multilabel_metrics([[1], [1], [0]], [[1], [0], [1]])
    assert m == {"micro_f1": approx(0.5), "macro_f1": approx(0.5), "subset_accuracy": approx(1 / 3)}
    assert multilabel_metrics([[0], [0]], [[0], [0]]) == {
        "micro_f1": 0.0,
        "macro_f1": 0.0,
        "subset_accuracy": 1.0,
    }


def test_multilabel_rejects_probabilities_and_ragged():
    with pytest.raises(ValueError, match="0/1"):
        multilabel_metrics([[0.7, 0.1]], [[1, 0]])
    with pytest.raises(ValueError, match="same length"):
        multilabel_metrics([[1, 0], [1]], [[1, 0], [1, 0]])


# ---------------------------------------------------------------------------------------------
# regression


def test_regression_perfect_and_mse():
    m = regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert m == {"pearson": approx(1.0), "spearman": approx(1.0), "mse": 0.0}
    # squared errors 1, 0, 4 -> mse 5/3
    assert regression_metrics([1, 2, 3], [2, 2, 5])["mse"] == approx(5 / 3)


def test_regression_monotone_nonlinear():
    # x = 1..4, y = x^2: ranks identical -> spearman 1. Pearson by hand: centred x = ±0.5, ±1.5
    # (Sxx = 5), centred y = -6.5, -3.5, 1.5, 8.5 (Syy = 129), Sxy = 25 -> 25 / sqrt(645).
    m = regression_metrics([1, 2, 3, 4], [1, 4, 9, 16])
    assert m["spearman"] == approx(1.0)
    assert m["pearson"] == approx(25 / math.sqrt(645))


def test_regression_constant_input_is_zero_not_nan():
    # 0.1 * 3 is not exact in binary floating point; the result must still be 0.0, not ±1 or nan.
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from a 0/0 either
        m = regression_metrics([0.1, 0.1, 0.1], [1.0, 2.0, 3.0])
        m2 = regression_metrics([1.0, 2.0, 3.0], [5.0, 5.0, 5.0])
    assert m["pearson"] == 0.0 and m["spearman"] == 0.0
    assert m2["pearson"] == 0.0 and m2["spearman"] == 0.0
    assert regression_metrics([1.0], [2.0])["pearson"] == 0.0


def test_regression_spearman_with_ties_matches_scipy():
    from scipy.stats import spearmanr

    x, y = [1, 2, 2, 3, 5], [2, 1, 4, 4, 3]
    assert regression_metrics(x, y)["spearman"] == approx(spearmanr(x, y)[0])


# ---------------------------------------------------------------------------------------------
# entities (seqeval default mode)


def test_entity_metrics_seqeval_readme_example():
    y_true = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    y_pred = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    # gold: MISC(3,5), PER(0,1); pred: MISC(2,5), PER(0,1) -> 1 of 2 correct each way.
    # token accuracy: sentence 0 differs at tokens 2 (O vs B-MISC) and 3 (B-MISC vs I-MISC) -> 8/10.
    m = entity_metrics(y_pred, y_true)
    assert m["precision"] == approx(0.5)
    assert m["recall"] == approx(0.5)
    assert m["f1"] == approx(0.5)
    assert m["accuracy"] == approx(0.8)


def test_get_entities_chunking_rules():
    assert get_entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    # I- after O starts a chunk (conlleval leniency), also at position 0.
    assert get_entities(["O", "I-PER", "I-PER"]) == [("PER", 1, 2)]
    assert get_entities(["I-ORG", "O"]) == [("ORG", 0, 0)]
    # A type change splits, even on I-.
    assert get_entities(["B-PER", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 1)]
    # B- after B- of the same type is a new chunk.
    assert get_entities(["B-PER", "B-PER"]) == [("PER", 0, 0), ("PER", 1, 1)]
    # IOBES is understood too.
    assert get_entities(["S-PER", "B-LOC", "E-LOC", "O"]) == [("PER", 0, 0), ("LOC", 1, 2)]
    assert get_entities(["O", "O"]) == []


def test_entity_metrics_type_change_and_lenient_i():
    # pred B-PER I-LOC = PER(0,0) + LOC(1,1); gold PER(0,0) -> P 1/2, R 1, F1 2/3.
    m = entity_metrics([["B-PER", "I-LOC"]], [["B-PER", "O"]])
    assert (m["precision"], m["recall"], m["f1"]) == (approx(0.5), approx(1.0), approx(2 / 3))
    # An I- that opens a chunk matches a gold B- chunk with the same span and type.
    m = entity_metrics([["O", "I-LOC", "I-LOC"]], [["O", "B-LOC", "I-LOC"]])
    assert m["f1"] == approx(1.0)
    assert m["accuracy"] == approx(2 / 3)


def test_entity_metrics_no_cross_sentence_chunks_and_empty_prediction():
    # The I-PER opening sentence 1 must not extend sentence 0's chunk.
    m = entity_metrics([["B-PER"], ["I-PER"]], [["B-PER"], ["B-PER"]])
    assert m["f1"] == approx(1.0)
    m = entity_metrics([["O", "O"]], [["B-PER", "O"]])
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0
    with pytest.raises(ValueError, match="sentence 0"):
        entity_metrics([["O"]], [["O", "O"]])


# ---------------------------------------------------------------------------------------------
# SQuAD


def test_normalize_answer():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("Theater") == "theater"  # articles only as whole words


def test_squad_exact_and_partial():
    preds = ["the Eiffel Tower", "in Paris", "Paris France"]
    refs = [["Eiffel Tower"], ["Paris, France"], ["Paris", "France, Paris"]]
    # 1: EM 1, F1 1. 2: [in, paris] vs [paris, france]: 1 common, P=R=1/2 -> F1 0.5, EM 0.
    # 3: vs "paris": F1 2/3; vs "france paris": same bag -> F1 1 (order-free), EM 0 (order).
    m = squad_metrics(preds, refs)
    assert m["exact_match"] == approx(1 / 3)
    assert m["f1"] == approx((1 + 0.5 + 1) / 3)


def test_squad_unanswerable():
    # Empty gold list: correct only if the prediction is empty after normalization.
    assert squad_metrics([""], [[]]) == {"exact_match": 1.0, "f1": 1.0}
    assert squad_metrics(["The."], [[]]) == {"exact_match": 1.0, "f1": 1.0}
    assert squad_metrics(["Paris"], [[]]) == {"exact_match": 0.0, "f1": 0.0}
    # Abstaining on an answerable question scores 0.
    assert squad_metrics([""], [["Paris"]]) == {"exact_match": 0.0, "f1": 0.0}


# ---------------------------------------------------------------------------------------------
# ROUGE


def test_rouge_identical_and_disjoint():
    assert rouge_scores(["The cat sat."], ["the CAT sat"]) == {
        "rouge1": approx(1.0),
        "rouge2": approx(1.0),
        "rougeL": approx(1.0),
    }
    assert rouge_scores(["dog"], ["cat"]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    assert rouge_scores([""], ["cat"])["rougeL"] == 0.0


def test_rouge_hand_partial():
    # pred "a b c" vs ref "a b c d e".
    # rouge1: 3 common, P 1, R 3/5 -> F 0.75. rouge2: pred {ab, bc} both in ref's 4 bigrams ->
    # P 1, R 1/2 -> F 2/3. rougeL: LCS 3 -> 0.75.
    m = rouge_scores(["a b c"], ["a b c d e"])
    assert m == {"rouge1": approx(0.75), "rouge2": approx(2 / 3), "rougeL": approx(0.75)}


def test_rouge_l_differs_from_rouge1_on_order_and_averages_examples():
    # pred "c b a" vs ref "a b c": rouge1 = 1, no shared bigram, LCS = 1 -> rougeL 1/3.
    # Second example identical (all 1). Means: rouge1 1, rouge2 0.5, rougeL 2/3.
    m = rouge_scores(["c b a", "x y"], ["a b c", "x y"])
    assert m == {"rouge1": approx(1.0), "rouge2": approx(0.5), "rougeL": approx((1 / 3 + 1) / 2)}


# ---------------------------------------------------------------------------------------------
# BLEU / chrF


def test_bleu_identical_and_disjoint():
    m = bleu_chrf(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert m == {"bleu": approx(1.0), "chrf": approx(1.0)}
    assert bleu_chrf(["x y z w"], ["a b c d"]) == {"bleu": 0.0, "chrf": 0.0}


def test_bleu_hand_partial():
    # hyp "the cat sat on the mat" vs ref "the cat sat on a mat" (6 tokens each, BP 1):
    # 1-grams 5/6 ("the" clipped to 1), 2-grams 3/5, 3-grams 2/4, 4-grams 1/3.
    # BLEU = (5/6 * 3/5 * 1/2 * 1/3) ** (1/4) = (1/12) ** 0.25.
    m = bleu_chrf(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert m["bleu"] == approx((1 / 12) ** 0.25)


def test_bleu_exp_smoothing():
    # hyp "a b c d" vs ref "a b x d": p1 3/4, p2 1/3 (ab), p3 0 -> 1/(2*2), p4 0 -> 1/(4*1).
    # BLEU = (3/4 * 1/3 * 1/4 * 1/4) ** (1/4) = (1/64) ** 0.25.
    assert bleu_chrf(["a b c d"], ["a b x d"])["bleu"] == approx((1 / 64) ** 0.25)


def test_bleu_brevity_penalty_and_corpus_pooling():
    # All precisions 1, hyp 4 tokens vs ref 6 -> BP exp(1 - 6/4).
    assert bleu_chrf(["a b c d"], ["a b c d e f"])["bleu"] == approx(math.exp(-0.5))
    # Statistics pooled over sentences, not averaged: 1-grams (4+3)/8, 2-grams (3+1)/6,
    # 3-grams (2+0)/4, 4-grams (1+0)/2 -> (7/8 * 2/3 * 1/2 * 1/2) ** 0.25.
    m = bleu_chrf(["a b c d", "e f g h"], ["a b c d", "e f x h"])
    assert m["bleu"] == approx((7 / 48) ** 0.25)


def test_bleu_13a_tokenization_and_multi_reference():
    # "Hello, world." -> Hello , world .  (4 tokens) on both sides.
    assert bleu_chrf(["Hello, world."], ["Hello , world ."])["bleu"] == approx(1.0)
    # Case-sensitive like sacreBLEU's default.
    assert bleu_chrf(["A b c d"], ["a b c d"])["bleu"] < 1.0
    # The best-matching reference counts.
    assert bleu_chrf(["a b c d"], [["a b x d", "a b c d"]])["bleu"] == approx(1.0)


def test_bleu_zero_when_no_4grams_exist():
    # sacreBLEU corpus default (no effective order): every hypothesis shorter than 4 tokens -> 0.
    assert bleu_chrf(["a b c"], ["a b c"])["bleu"] == 0.0


def test_bleu_chrf_match_sacrebleu_readme_numbers():
    # sacreBLEU's README example (two reference streams): "BLEU = 48.53 82.4/50.0/45.5/37.5
    # (BP = 0.943 ratio = 0.944 hyp_len = 17 ref_len = 18)" and "chrF2 = 59.73".
    refs2 = [
        "The dog had bit the man.",
        "No one was surprised.",
        "The man had bitten the dog.",
    ]
    m = bleu_chrf(_MT_HYPS, [[a, b] for a, b in zip(_MT_REFS, refs2)])
    assert m["bleu"] == approx(0.4853, abs=5e-5)
    assert m["chrf"] == approx(0.5973, abs=5e-5)


def test_chrf_hand_cases():
    # hyp "ab" vs ref "abc": order 1: P 2/2, R 2/3; order 2: P 1/1, R 1/2; orders 3..6: hyp has
    # none -> skipped. avg P 1, avg R 7/12; chrF2 = 5 * 7/12 / (4 + 7/12) = 7/11.
    assert bleu_chrf(["ab"], ["abc"])["chrf"] == approx(7 / 11)
    # Whitespace is removed before extracting character n-grams.
    assert bleu_chrf(["a b"], ["ab"])["chrf"] == approx(1.0)
    # Corpus statistics are summed: ("ab","abc") + ("ab","ab") -> order 1: P 4/4, R 4/5;
    # order 2: P 2/2, R 2/3 -> avg R 11/15 -> chrF2 = 5 * 11/15 / (4 + 11/15) = 55/71.
    assert bleu_chrf(["ab", "ab"], ["abc", "ab"])["chrf"] == approx(55 / 71)


# ---------------------------------------------------------------------------------------------
# retrieval


def test_retrieval_known_ranking_with_pessimistic_ties():
    sim = np.array(
        [
            [0.9, 0.1, 0.5],  # relevant 0 is top -> rank 1
            [0.2, 0.8, 0.8],  # relevant 2 ties with doc 1 -> pessimistic rank 2
            [0.3, 0.3, 0.3],  # all tied -> rank 3 (worst)
        ]
    )
    m = retrieval_metrics(sim, [0, 2, 1], ks=(1, 2, 3))
    assert m["recall@1"] == approx(1 / 3)
    assert m["recall@2"] == approx(2 / 3)
    assert m["recall@3"] == approx(1.0)
    assert m["mrr"] == approx((1 + 1 / 2 + 1 / 3) / 3)


def test_retrieval_default_keys_and_validation():
    sim = np.eye(12)
    m = retrieval_metrics(sim, list(range(12)))
    assert set(m) == {"recall@1", "recall@5", "recall@10", "mrr"}
    assert all(v == approx(1.0) for v in m.values())
    # Relevant doc ranked last of 12: outside every cut-off, reciprocal rank 1/12.
    m = retrieval_metrics(-np.eye(12), list(range(12)))
    assert m["recall@10"] == 0.0 and m["mrr"] == approx(1 / 12)
    with pytest.raises(ValueError, match="must align"):
        retrieval_metrics(sim, [0, 1])
    with pytest.raises(ValueError, match="must be 2D"):
        retrieval_metrics(np.zeros(3), [0])


def test_empty_inputs_give_zeros():
    assert classification_metrics([], [], 2) == {"accuracy": 0.0, "macro_f1": 0.0}
    assert squad_metrics([], [])["f1"] == 0.0
    assert rouge_scores([], [])["rougeL"] == 0.0
    assert bleu_chrf([], [])["bleu"] == 0.0
    assert entity_metrics([], [])["f1"] == 0.0
    assert entity_metrics([[]], [[]]) == dict.fromkeys(
        ("precision", "recall", "f1", "accuracy"), 0.0
    )
    assert multilabel_metrics([], [])["macro_f1"] == 0.0
    assert regression_metrics([], []) == {"pearson": 0.0, "spearman": 0.0, "mse": 0.0}
    assert retrieval_metrics(np.zeros((0, 3)), [])["mrr"] == 0.0


# ---------------------------------------------------------------------------------------------
# the numbers of the hand-written implementations, on 300 random cases per metric


@pytest.fixture(scope="module")
def recorded() -> dict[str, list[dict[str, float]]]:
    return json.loads(RECORDED_FILE.read_text())


@pytest.mark.parametrize("name", sorted({name for name, _, _ in metric_cases()}))
def test_same_numbers_as_the_hand_written_metrics(recorded, name):
    # Recorded from the hand-written module of d39a7c8 (cross-checked there against the same
    # libraries); agreement here pins the arguments ft passes: averaging, zero_division,
    # tokenisation, BIO/IOBES chunking, reference streams, the nan/constant/empty edge cases.
    cases = [(i, kwargs) for n, i, kwargs in metric_cases() if n == name]
    assert len(cases) == len(recorded[name]) == CASES_PER_METRIC
    with warnings.catch_warnings():
        # No library warning may leak into a run's log (scipy's constant input, sklearn's and
        # seqeval's undefined metric): the edge cases are ft's to handle.
        warnings.simplefilter("error", RuntimeWarning)
        warnings.simplefilter("error", UserWarning)
        for i, kwargs in cases:
            got, want = getattr(metrics, name)(**kwargs), recorded[name][i]
            assert got.keys() == want.keys(), (name, i)
            for key, value in want.items():
                if math.isnan(value):  # a nan mse stays nan (a diverged model must show)
                    assert math.isnan(got[key]), (name, i, key)
                else:
                    # 12 significant digits recorded; the libraries differ from the hand-written
                    # sums only in the last bits (measured: at most 5e-11 absolute, on an mse).
                    assert got[key] == approx(value, rel=1e-10, abs=1e-11), (name, i, key, kwargs)
                    assert type(got[key]) is float, (name, key, type(got[key]))  # JSON-ready


# ---------------------------------------------------------------------------------------------
# cross-checks against the reference packages (installed by the dev extra)


def test_cross_check_sacrebleu():
    import sacrebleu

    m = bleu_chrf(_MT_HYPS, _MT_REFS)
    assert m["bleu"] == approx(sacrebleu.corpus_bleu(_MT_HYPS, [_MT_REFS]).score / 100, abs=1e-6)
    assert m["chrf"] == approx(sacrebleu.corpus_chrf(_MT_HYPS, [_MT_REFS]).score / 100, abs=1e-6)


def test_cross_check_rouge_score():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    got = rouge_scores(_MT_HYPS, _MT_REFS)
    for key in ("rouge1", "rouge2", "rougeL"):
        want = np.mean([scorer.score(r, h)[key].fmeasure for h, r in zip(_MT_HYPS, _MT_REFS)])
        assert got[key] == approx(want)


def test_cross_check_seqeval():
    from seqeval import metrics as seqeval_metrics

    y_true = [["B-PER", "I-PER", "O", "I-LOC", "B-ORG"], ["O", "B-MISC", "I-PER"]]
    y_pred = [["B-PER", "I-LOC", "O", "B-LOC", "B-ORG"], ["I-MISC", "I-MISC", "I-PER"]]
    m = entity_metrics(y_pred, y_true)
    assert m["f1"] == approx(seqeval_metrics.f1_score(y_true, y_pred))
    assert m["precision"] == approx(seqeval_metrics.precision_score(y_true, y_pred))
    assert m["recall"] == approx(seqeval_metrics.recall_score(y_true, y_pred))
    assert m["accuracy"] == approx(seqeval_metrics.accuracy_score(y_true, y_pred))
