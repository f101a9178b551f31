"""Evaluation metrics, computed by the libraries that own them with ft's conventions.

scikit-learn (accuracy, F1), scipy.stats (correlations), seqeval (entities), rouge-score and
sacreBLEU (BLEU, chrF) compute; ft fixes their arguments (each docstring names them) and the edge
cases. Kept here as no maintained offline package has them: SQuAD EM/F1 and recall@k / MRR.
Inputs are plain lists (or arrays); results are dicts of floats on a 0..1 scale, except
correlations (-1..1) and ``mse``. Empty inputs give 0.0, not nan (an empty eval split must not
poison a metrics log); mismatched lengths raise ``ValueError``. The libraries are imported in the
functions, so importing this module (``ft validate``) stays cheap and torch-free.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

import numpy as np


def _check_same_length(what: str, preds: Sequence, labels: Sequence) -> None:
    # Misaligned predictions silently produce plausible-looking wrong numbers; fail loudly instead.
    if len(preds) != len(labels):
        raise ValueError(
            f"{what}: got {len(preds)} predictions but {len(labels)} references; they must align"
        )


def classification_metrics(
    preds: list[int], labels: list[int], num_labels: int
) -> dict[str, float]:
    """Accuracy and macro-F1 (scikit-learn ``f1_score(average="macro", zero_division=0)``: the
    mean over classes present in ``labels`` or ``preds``; no true positive scores 0). An id outside
    ``[0, num_labels)`` raises: the label mapping and the model head disagree."""
    _check_same_length("classification_metrics", preds, labels)
    p = np.asarray(preds, dtype=np.int64).reshape(-1)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    for name, arr in (("preds", p), ("labels", y)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_labels):
            raise ValueError(
                f"classification_metrics: {name} contain ids outside [0, {num_labels}) "
                f"(min {arr.min()}, max {arr.max()}); check num_labels and the label mapping"
            )
    if y.size == 0:
        return {"accuracy": 0.0, "macro_f1": 0.0}
    from sklearn.metrics import accuracy_score, f1_score

    macro_f1 = float(f1_score(y, p, average="macro", zero_division=0))
    return {"accuracy": float(accuracy_score(y, p)), "macro_f1": macro_f1}


def multilabel_metrics(preds: list[list[int]], labels: list[list[int]]) -> dict[str, float]:
    """Micro-F1, macro-F1 and subset accuracy of 0/1 indicator rows (scikit-learn, zero_division=0).

    Other values raise (a forgotten threshold). ``micro_f1`` pools every (example, label) cell;
    ``macro_f1`` averages over the labels positive somewhere in ``labels`` or ``preds``, unlike
    sklearn's all-columns mean, which punishes never predicting a label the split lacks.
    """
    _check_same_length("multilabel_metrics", preds, labels)
    if len(labels) == 0:
        return {"micro_f1": 0.0, "macro_f1": 0.0, "subset_accuracy": 0.0}
    try:
        p, y = np.asarray(preds), np.asarray(labels)
    except ValueError as e:  # ragged inner lists
        raise ValueError(
            f"multilabel_metrics: inner vectors must all have the same length ({e})"
        ) from None
    if p.ndim != 2 or p.shape != y.shape:
        raise ValueError(
            f"multilabel_metrics: preds and labels must both be [n_examples, n_labels] 0/1 "
            f"matrices of the same shape, got {p.shape} and {y.shape}"
        )
    for name, arr in (("preds", p), ("labels", y)):
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(
                f"multilabel_metrics: {name} must be 0/1 indicators (threshold probabilities first)"
            )
    from sklearn.metrics import accuracy_score, f1_score

    p, y = p.astype(np.int64), y.astype(np.int64)
    # 1-D binary F1s: sklearn reads a one-column matrix as binary and averages in the 0 class.
    micro = f1_score(y.ravel(), p.ravel(), zero_division=0)
    present = np.flatnonzero((p | y).any(axis=0))
    per_label = [f1_score(y[:, j], p[:, j], zero_division=0) for j in present]
    macro, subset = (float(np.mean(per_label)) if per_label else 0.0), float(accuracy_score(y, p))
    return {"micro_f1": float(micro), "macro_f1": macro, "subset_accuracy": subset}


def regression_metrics(preds: list[float], labels: list[float]) -> dict[str, float]:
    """Pearson and Spearman correlation (scipy.stats) and mean squared error.

    An undefined correlation (under 2 points, a constant side, a nan or inf) is 0.0 instead of nan
    and scipy's warning; ``mse`` is left nan for nan predictions (a diverged model must show).
    """
    _check_same_length("regression_metrics", preds, labels)
    p = np.asarray(preds, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if y.size == 0:
        return {"pearson": 0.0, "spearman": 0.0, "mse": 0.0}
    mse = float(np.mean((p - y) ** 2))
    finite = np.isfinite(p).all() and np.isfinite(y).all()
    # ptp == 0 tests constancy exactly: centring [0.1] * 3 leaves ~1e-17 residues (a fake +-1).
    if y.size < 2 or not finite or np.ptp(p) == 0 or np.ptp(y) == 0:
        return {"pearson": 0.0, "spearman": 0.0, "mse": mse}
    from scipy.stats import pearsonr, spearmanr

    pearson = float(pearsonr(p, y).statistic)
    return {"pearson": pearson, "spearman": float(spearmanr(p, y).statistic), "mse": mse}


def get_entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """Entity chunks ``(type, start, end)`` (end inclusive) of one tag sequence: seqeval's default
    (conlleval) chunking of IOB2/IOBES, where an I- after O opens a chunk and a type change splits
    one: ``["O", "I-PER", "B-PER", "I-LOC"]`` gives PER 1..1, PER 2..2 and LOC 3..3."""
    from seqeval.metrics.sequence_labeling import get_entities as seqeval_entities

    return seqeval_entities(list(tags))


def entity_metrics(pred_tags: list[list[str]], true_tags: list[list[str]]) -> dict[str, float]:
    """Entity micro precision / recall / F1 (seqeval defaults, zero_division=0: a chunk counts when
    type, start and end match) and token accuracy (the fraction of tags that match)."""
    _check_same_length("entity_metrics", pred_tags, true_tags)
    for s, (pred, true) in enumerate(zip(pred_tags, true_tags)):
        if len(pred) != len(true):
            raise ValueError(
                f"entity_metrics: sentence {s} has {len(pred)} predicted tags but {len(true)} "
                "gold tags; they must align token for token"
            )
    if not any(len(true) for true in true_tags):
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.0}
    from seqeval.metrics import accuracy_score
    from seqeval.metrics.sequence_labeling import precision_recall_fscore_support

    y_true, y_pred = [list(t) for t in true_tags], [list(p) for p in pred_tags]
    prf = precision_recall_fscore_support(y_true, y_pred, average="micro", zero_division=0)
    result = {key: float(value) for key, value in zip(("precision", "recall", "f1"), prf)}
    return {**result, "accuracy": float(accuracy_score(y_true, y_pred))}


_ARTICLES_RE = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lowercase, strip ASCII punctuation, drop the articles a/an/the, collapse whitespace: the
    official SQuAD v1.1 script's steps in its order (v2.0 reuses them)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES_RE.sub(" ", s).split())


def _squad_f1(prediction: str, ground_truth: str) -> float:
    # Token F1 over normalised whitespace tokens with multiset overlap (official script).
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)  # v2.0: 1 only when both are empty
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision, recall = num_same / len(pred_tokens), num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """Exact match and token F1, each the max over an example's gold answers, averaged. As the
    SQuAD v2.0 script, gold answers normalising to "" are dropped; with none left (unanswerable)
    the gold answer is "", so abstaining scores 1 and anything else 0."""
    _check_same_length("squad_metrics", predictions, references)
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    em_total = f1_total = 0.0
    for pred, golds in zip(predictions, references):
        if isinstance(golds, str):  # a bare string is one gold answer, not a list of characters
            golds = [golds]
        golds = [g for g in golds if normalize_answer(g)] or [""]
        em_total += max(float(normalize_answer(pred) == normalize_answer(g)) for g in golds)
        f1_total += max(_squad_f1(pred, g) for g in golds)
    return {"exact_match": em_total / len(predictions), "f1": f1_total / len(predictions)}


def rouge_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """ROUGE-1/2/L F-measures, the plain mean over examples of rouge-score's ``RougeScorer(...,
    use_stemmer=False)`` (tokens: lowercase [a-z0-9] runs, so non-ASCII text scores 0; sentence
    LCS, not rougeLsum; no bootstrap aggregation)."""
    _check_same_length("rouge_scores", predictions, references)
    keys = ("rouge1", "rouge2", "rougeL")
    if not predictions:
        return dict.fromkeys(keys, 0.0)
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(list(keys), use_stemmer=False)
    scores = [scorer.score(target, pred) for pred, target in zip(predictions, references)]
    return {k: float(np.mean([s[k].fmeasure for s in scores])) for k in keys}


def bleu_chrf(predictions: list[str], references: list[str] | list[list[str]]) -> dict[str, float]:
    """Corpus BLEU-4 and chrF, sacreBLEU's ``corpus_bleu`` / ``corpus_chrf`` defaults / 100 (13a
    tokens, case-sensitive, exp smoothing; char 1..6-grams without spaces, beta 2, not chrF++).
    ``references[i]`` is one reference string or a list of alternatives."""
    _check_same_length("bleu_chrf", predictions, references)
    if not predictions:
        return {"bleu": 0.0, "chrf": 0.0}
    import sacrebleu

    alternatives = [[r] if isinstance(r, str) else list(r) or [""] for r in references]
    # sacreBLEU wants reference streams (the i-th alternative of every prediction), None where a
    # prediction has fewer (its documented way; its hints omit it); an empty list scores as "".
    streams: list[list] = [
        [refs[i] if i < len(refs) else None for refs in alternatives]
        for i in range(max(map(len, alternatives)))
    ]
    preds = list(predictions)
    # force=True: no "looks tokenized" log line per evaluation; it changes no number.
    bleu = sacrebleu.corpus_bleu(preds, streams, force=True).score
    return {"bleu": bleu / 100, "chrf": sacrebleu.corpus_chrf(preds, streams).score / 100}


def retrieval_metrics(
    similarity, relevant: list[int], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@k and mean reciprocal rank, one relevant document per query.

    ``similarity`` is ``[n_queries, n_docs]`` (higher = closer); ``relevant[i]`` is query i's
    document, ranked 1 + the number of *other* documents scoring >= it: ties count against it (a
    model scoring all equal gets the worst rank, as does a nan score). All 0.0 without queries.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2:
        raise ValueError(
            f"retrieval_metrics: similarity must be 2D [n_queries, n_docs], got shape {sim.shape}"
        )
    rel = np.asarray(relevant, dtype=np.int64).reshape(-1)
    if len(rel) != sim.shape[0]:
        raise ValueError(
            f"retrieval_metrics: similarity has {sim.shape[0]} query rows but relevant has "
            f"{len(rel)} entries; they must align"
        )
    n_queries, n_docs = sim.shape
    if n_queries == 0:
        return {**{f"recall@{k}": 0.0 for k in ks}, "mrr": 0.0}
    if rel.min() < 0 or rel.max() >= n_docs:
        raise ValueError(f"retrieval_metrics: relevant indices must be in [0, {n_docs})")
    rel_scores = sim[np.arange(n_queries), rel]
    ranks = (sim >= rel_scores[:, None]).sum(axis=1)  # counts the relevant doc itself (not nan)
    ranks = np.where(np.isnan(rel_scores), n_docs, ranks)
    result = {f"recall@{k}": float(np.mean(ranks <= k)) for k in ks}
    return {**result, "mrr": float(np.mean(1 / ranks))}
