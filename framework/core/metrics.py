"""Evaluation metrics, reimplemented in plain Python + numpy (+ scipy.stats for ranks).

Why reimplement: hub-loaded metric scripts need the network and change under us, and seqeval /
rouge-score / sacrebleu are extra dependencies for a few dozen lines each. Each function here
follows the conventions of the reference implementation named in its docstring, so numbers stay
comparable with published results; where we deviate, the docstring says so.

Every function takes plain Python lists (numpy arrays work too) and returns a dict of floats.
Scores are on a 0..1 scale (not percentages), except correlations (-1..1), ``mse`` (>= 0) and
``perplexity`` (>= 0). Empty inputs give 0.0 scores rather than nan, so an empty eval split never
poisons a metrics log with nan; mismatched lengths raise ``ValueError`` because they always mean
a bug upstream (misaligned predictions), never a legitimate result.

No torch import: metrics run on plain lists, so this module stays cheap to import and to test.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "classification_metrics",
    "multilabel_metrics",
    "regression_metrics",
    "get_entities",
    "entity_metrics",
    "normalize_answer",
    "squad_metrics",
    "rouge_scores",
    "bleu_chrf",
    "retrieval_metrics",
    "perplexity",
]


# --------------------------------------------------------------------------------------------
# small helpers


def _check_same_length(what: str, preds: Sequence, labels: Sequence) -> None:
    # Misaligned predictions silently produce plausible-looking wrong numbers; fail loudly instead.
    if len(preds) != len(labels):
        raise ValueError(
            f"{what}: got {len(preds)} predictions but {len(labels)} references; they must align"
        )


def _f1_from_counts(tp: float, fp: float, fn: float) -> float:
    """F1 = 2TP / (2TP + FP + FN): equal to the harmonic mean of P and R whenever that is defined,
    and 0 when TP = 0 (sklearn's zero_division=0 convention), without a division by zero."""
    denom = 2 * tp + fp + fn
    return float(2 * tp / denom) if denom > 0 else 0.0


def _fmeasure(precision: float, recall: float) -> float:
    # Harmonic mean with 0 when both are 0 (rouge-score's scoring.fmeasure).
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


# --------------------------------------------------------------------------------------------
# classification


def classification_metrics(
    preds: list[int], labels: list[int], num_labels: int
) -> dict[str, float]:
    """Accuracy and macro-F1 for single-label classification.

    Macro-F1 follows sklearn's ``f1_score(average="macro")`` with default ``labels=None``: it
    averages over the classes present in ``labels`` ∪ ``preds`` (a class that never occurs in
    either is not averaged in), and a class with no true positive scores F1 = 0.

    ``num_labels`` is used to validate the ids: a value outside ``[0, num_labels)`` means the
    label mapping and the model head disagree, which is reported instead of being scored.
    Returns ``{"accuracy", "macro_f1"}``; both 0.0 for empty inputs.
    """
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

    accuracy = float(np.mean(p == y))
    f1s = []
    for c in np.union1d(p, y):  # only classes present, as sklearn does
        tp = int(np.sum((p == c) & (y == c)))
        fp = int(np.sum((p == c) & (y != c)))
        fn = int(np.sum((p != c) & (y == c)))
        f1s.append(_f1_from_counts(tp, fp, fn))
    return {"accuracy": accuracy, "macro_f1": float(np.mean(f1s))}


def multilabel_metrics(preds: list[list[int]], labels: list[list[int]]) -> dict[str, float]:
    """Micro-F1, macro-F1 and subset (exact-match) accuracy for multi-label classification.

    Each inner list is a 0/1 indicator vector over the labels (thresholding probabilities is the
    caller's job; other values raise ``ValueError`` so a forgotten threshold is caught).

    - ``micro_f1``: F1 over all (example, label) cells pooled, as sklearn ``average="micro"``.
    - ``macro_f1``: mean of per-label F1 over the labels that are positive at least once in
      ``labels`` or ``preds``. Deviation from sklearn, which averages over *all* columns and
      scores a never-occurring label 0: that would punish a model for correctly never predicting
      a label the eval split lacks. This matches ``classification_metrics``' "present classes".
    - ``subset_accuracy``: fraction of examples whose whole vector is exactly right.

    F1s are 0.0 when there is no positive anywhere (sklearn's zero_division=0); all 0.0 for
    empty inputs.
    """
    _check_same_length("multilabel_metrics", preds, labels)
    if len(labels) == 0:
        return {"micro_f1": 0.0, "macro_f1": 0.0, "subset_accuracy": 0.0}
    try:
        p = np.asarray(preds)
        y = np.asarray(labels)
    except ValueError as e:  # ragged inner lists
        raise ValueError(
            f"multilabel_metrics: inner vectors must all have the same length ({e})"
        ) from None
    if p.ndim != 2 or y.ndim != 2 or p.shape != y.shape:
        raise ValueError(
            f"multilabel_metrics: preds and labels must both be [n_examples, n_labels] 0/1 "
            f"matrices of the same shape, got {p.shape} and {y.shape}"
        )
    for name, arr in (("preds", p), ("labels", y)):
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(
                f"multilabel_metrics: {name} must be 0/1 indicators (threshold probabilities first)"
            )
    p = p.astype(bool)
    y = y.astype(bool)

    tp = (p & y).sum(axis=0)
    fp = (p & ~y).sum(axis=0)
    fn = (~p & y).sum(axis=0)
    micro = _f1_from_counts(tp.sum(), fp.sum(), fn.sum())
    present = (p | y).any(axis=0)
    per_label = [_f1_from_counts(tp[j], fp[j], fn[j]) for j in np.flatnonzero(present)]
    macro = float(np.mean(per_label)) if per_label else 0.0
    subset = float(np.mean((p == y).all(axis=1)))
    return {"micro_f1": micro, "macro_f1": macro, "subset_accuracy": subset}


# --------------------------------------------------------------------------------------------
# regression


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    # Constant input makes the correlation undefined (0/0); report 0.0 ("no linear relation")
    # instead of nan. Test constancy exactly with max == min: centring a constant float vector
    # can leave ~1e-17 residues whose correlation is meaningless ±1.
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    xc = x - x.mean()
    yc = y - y.mean()
    denom = math.sqrt(float(np.dot(xc, xc)) * float(np.dot(yc, yc)))
    if not denom or not math.isfinite(denom):
        return 0.0
    r = float(np.dot(xc, yc)) / denom
    if not math.isfinite(r):  # nan in the inputs
        return 0.0
    return max(-1.0, min(1.0, r))  # rounding can step just outside [-1, 1]


def regression_metrics(preds: list[float], labels: list[float]) -> dict[str, float]:
    """Pearson and Spearman correlation (in [-1, 1]) and mean squared error (>= 0).

    Spearman is Pearson on average ranks (ties share their mean rank), as ``scipy.stats.spearmanr``.
    nan-safe: constant predictions or labels (or fewer than 2 points, or nan values) give 0.0
    correlation instead of nan. ``mse`` is left as computed (nan inputs give a nan mse: a diverged
    model should not look fine). All 0.0 for empty inputs.
    """
    _check_same_length("regression_metrics", preds, labels)
    p = np.asarray(preds, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if y.size == 0:
        return {"pearson": 0.0, "spearman": 0.0, "mse": 0.0}
    pearson = _pearson(p, y)
    if np.isfinite(p).all() and np.isfinite(y).all():
        spearman = _pearson(rankdata(p), rankdata(y))
    else:
        spearman = 0.0  # ranks of nan are undefined
    mse = float(np.mean((p - y) ** 2))
    return {"pearson": pearson, "spearman": spearman, "mse": mse}


# --------------------------------------------------------------------------------------------
# entity-level (seqeval / conlleval)


def _split_tag(tag: str) -> tuple[str, str]:
    # seqeval: the prefix is the first character, the type is what follows the first '-';
    # a bare tag such as "O" or "B" has type "_" (seqeval's placeholder).
    prefix = tag[0] if tag else "O"
    type_ = tag[1:].split("-", maxsplit=1)[-1] or "_"
    return prefix, type_


def _end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    # seqeval.metrics.sequence_labeling.end_of_chunk, verbatim in logic (covers IOB2 and IOBES).
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    # A type change always closes the open chunk (conlleval).
    return prev_tag not in ("O", ".") and prev_type != type_


def _start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    # seqeval.metrics.sequence_labeling.start_of_chunk, verbatim in logic.
    if tag in ("B", "S"):
        return True
    # An I-/E- with nothing open (after O, or after a closed E-/S-) starts a chunk: conlleval's
    # lenient reading of ill-formed IOB, which is seqeval's default (non-strict) mode.
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    # A type change starts a new chunk even on I- (e.g. B-PER I-LOC is PER + LOC).
    return tag not in ("O", ".") and prev_type != type_


def get_entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """Entity chunks ``(type, start, end)`` (end inclusive) of one tag sequence, as seqeval.

    Follows seqeval's default (conlleval-compatible, non-strict) chunking for IOB2/BIO (and
    IOBES): a chunk starts at B-/S-, at an I-/E- that follows O or a closed chunk, or at any tag
    whose type differs from the previous tag's; it ends before O, B-, S-, a type change, or after
    E-/S-. So ``["O", "I-PER", "I-PER"]`` gives ``[("PER", 1, 2)]`` and ``["B-PER", "I-LOC"]``
    gives ``[("PER", 0, 0), ("LOC", 1, 1)]``.
    """
    chunks: list[tuple[str, int, int]] = []
    prev_tag, prev_type = "O", ""
    begin = 0
    # A trailing "O" sentinel flushes a chunk that runs to the end of the sequence.
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, type_ = _split_tag(tag)
        if _end_of_chunk(prev_tag, prefix, prev_type, type_):
            chunks.append((prev_type, begin, i - 1))
        if _start_of_chunk(prev_tag, prefix, prev_type, type_):
            begin = i
        prev_tag, prev_type = prefix, type_
    return chunks


def entity_metrics(pred_tags: list[list[str]], true_tags: list[list[str]]) -> dict[str, float]:
    """Entity-level micro precision / recall / F1 and token accuracy, as seqeval's defaults.

    Chunks come from :func:`get_entities` per sentence (so no chunk spans two sentences, as
    seqeval's "O"-joined flattening guarantees); a predicted chunk counts only if type, start and
    end all match a gold chunk. Scores are micro-averaged over all chunks of all types; with no
    predicted (or no gold) chunk the undefined precision (recall) is 0.0, as seqeval's
    zero_division default. ``accuracy`` is the fraction of tokens whose tag string matches.
    """
    _check_same_length("entity_metrics", pred_tags, true_tags)
    true_set: set[tuple[int, str, int, int]] = set()
    pred_set: set[tuple[int, str, int, int]] = set()
    n_tokens = n_correct = 0
    for s, (pred, true) in enumerate(zip(pred_tags, true_tags)):
        if len(pred) != len(true):
            raise ValueError(
                f"entity_metrics: sentence {s} has {len(pred)} predicted tags but {len(true)} "
                "gold tags; they must align token for token"
            )
        true_set.update((s,) + e for e in get_entities(true))
        pred_set.update((s,) + e for e in get_entities(pred))
        n_tokens += len(true)
        n_correct += sum(p == t for p, t in zip(pred, true))
    tp = len(true_set & pred_set)
    precision = tp / len(pred_set) if pred_set else 0.0
    recall = tp / len(true_set) if true_set else 0.0
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(_fmeasure(precision, recall)),
        "accuracy": float(n_correct / n_tokens) if n_tokens else 0.0,
    }


# --------------------------------------------------------------------------------------------
# extractive QA (SQuAD v1.1 / v2.0 official scripts)

_ARTICLES_RE = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lowercase, strip ASCII punctuation, drop the articles a/an/the, collapse whitespace.

    Same order of steps as the official SQuAD v1.1 evaluation script (which v2.0 reuses), so
    EM/F1 match the leaderboard definitions.
    """
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


def _squad_f1(prediction: str, ground_truth: str) -> float:
    # Token-level F1 over normalized, whitespace-split tokens with multiset overlap (official).
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    if not pred_tokens or not gold_tokens:
        # v2.0 script: if either side is empty, F1 is 1 only when both are.
        return float(pred_tokens == gold_tokens)
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """Exact match and token F1 (0..1), each the max over an example's gold answers, averaged.

    SQuAD 2.0 unanswerable questions: as in the v2.0 script, gold answers that normalize to the
    empty string are dropped and, if none remain (e.g. an empty gold list), the only gold answer
    is "" — so the example scores 1 exactly when the prediction normalizes to "" (abstains),
    else 0. All 0.0 for empty inputs.
    """
    _check_same_length("squad_metrics", predictions, references)
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    em_total = f1_total = 0.0
    for pred, golds in zip(predictions, references):
        if isinstance(golds, str):  # a bare string is one gold answer, not a list of characters
            golds = [golds]
        golds = [g for g in golds if normalize_answer(g)] or [""]
        norm_pred = normalize_answer(pred)
        em_total += max(float(norm_pred == normalize_answer(g)) for g in golds)
        f1_total += max(_squad_f1(pred, g) for g in golds)
    n = len(predictions)
    return {"exact_match": em_total / n, "f1": f1_total / n}


# --------------------------------------------------------------------------------------------
# ROUGE (google-research rouge-score defaults)

_ROUGE_NON_ALNUM_RE = re.compile(r"[^a-z0-9]+")


def _rouge_tokenize(text: str) -> list[str]:
    # rouge-score's default tokenizer without stemming: lowercase, every run of characters other
    # than ASCII a-z0-9 becomes a space, split. Like rouge-score, non-ASCII letters are dropped
    # (so e.g. Chinese text has no tokens and scores 0): kept for comparability with the package.
    return _ROUGE_NON_ALNUM_RE.sub(" ", text.lower()).split()


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _rouge_n(target: list[str], prediction: list[str], n: int) -> float:
    # rouge-score _score_ngrams: clipped overlap; max(count, 1) denominators give 0, not 0/0.
    t, p = _ngrams(target, n), _ngrams(prediction, n)
    overlap = sum(min(c, p[g]) for g, c in t.items())
    precision = overlap / max(sum(p.values()), 1)
    recall = overlap / max(sum(t.values()), 1)
    return _fmeasure(precision, recall)


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    # Classic O(len(a)*len(b)) dynamic programme, keeping one row at a time.
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def _rouge_l(target: list[str], prediction: list[str]) -> float:
    if not target or not prediction:
        return 0.0
    lcs = _lcs_length(target, prediction)
    return _fmeasure(lcs / len(prediction), lcs / len(target))


def rouge_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures (0..1), each averaged over examples.

    Matches ``rouge_score.rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"],
    use_stemmer=False)`` per example (tokenization: lowercase, non-[a-z0-9] to spaces, split), then
    a plain mean (``evaluate``'s default bootstrap aggregation reports a resampled mean instead,
    which differs slightly). ROUGE-L is sentence-level LCS (not rougeLsum). All 0.0 for empty
    inputs.
    """
    _check_same_length("rouge_scores", predictions, references)
    if not predictions:
        return {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for pred, ref in zip(predictions, references):
        p, t = _rouge_tokenize(pred), _rouge_tokenize(ref)
        totals["rouge1"] += _rouge_n(t, p, 1)
        totals["rouge2"] += _rouge_n(t, p, 2)
        totals["rougeL"] += _rouge_l(t, p)
    return {k: v / len(predictions) for k, v in totals.items()}


# --------------------------------------------------------------------------------------------
# BLEU and chrF (sacreBLEU defaults)

# sacreBLEU's 13a tokenizer (mteval-v13a.pl), language-dependent part for Western languages.
_13A_RULES = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # split most ASCII symbols
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period/comma unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # period/comma unless followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash after a digit
]


def _tokenize_13a(line: str) -> list[str]:
    """sacreBLEU's default "13a" tokenization (after its rstrip), returned as a token list."""
    line = line.rstrip()
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        for entity, char in (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">")):
            line = line.replace(entity, char)
    line = f" {line} "
    for pattern, repl in _13A_RULES:
        line = pattern.sub(repl, line)
    return line.split()


def _as_reference_lists(references: Sequence) -> list[list[str]]:
    # Accept one reference string per prediction or a list of alternative references.
    return [[r] if isinstance(r, str) else list(r) for r in references]


_BLEU_ORDER = 4


def _corpus_bleu(predictions: list[str], references: list[list[str]]) -> float:
    """sacreBLEU ``corpus_bleu`` with its defaults: 13a tokens, BLEU-4, exp smoothing."""
    correct = [0] * _BLEU_ORDER
    total = [0] * _BLEU_ORDER
    sys_len = ref_len = 0
    for pred, refs in zip(predictions, references):
        hyp = _tokenize_13a(pred)
        ref_toks = [_tokenize_13a(r) for r in refs]
        sys_len += len(hyp)
        # Effective reference length: the reference closest in length, the shorter on a tie.
        if ref_toks:
            ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in ref_toks)[1]
        for n in range(1, _BLEU_ORDER + 1):
            h = _ngrams(hyp, n)
            max_ref: Counter = Counter()
            for r in ref_toks:  # clip each n-gram by its max count in any single reference
                max_ref |= _ngrams(r, n)
            correct[n - 1] += sum(min(c, max_ref[g]) for g, c in h.items())
            total[n - 1] += sum(h.values())

    if not any(correct):  # sacreBLEU returns 0 outright when nothing matches (issue #141)
        return 0.0
    bp = 1.0 if sys_len >= ref_len else (math.exp(1 - ref_len / sys_len) if sys_len else 0.0)
    # Smoothing = sacreBLEU's default "exp" (mteval-v13a / NIST): the k-th order with zero
    # matches gets precision 1 / (2^k * total) instead of 0, so a small corpus with some overlap
    # but no 4-gram match does not collapse to 0. An order with no n-grams at all (every
    # hypothesis shorter than n tokens) still gives 0, exactly as sacreBLEU without
    # effective order (its corpus default).
    log_sum = 0.0
    smooth = 1.0
    for n in range(_BLEU_ORDER):
        if total[n] == 0:
            return 0.0
        if correct[n] == 0:
            smooth *= 2
            precision = 1.0 / (smooth * total[n])
        else:
            precision = correct[n] / total[n]
        log_sum += math.log(precision)
    return bp * math.exp(log_sum / _BLEU_ORDER)


_CHRF_ORDER = 6
_CHRF_BETA = 2.0


def _char_ngram_stats(hyp: str, ref: str) -> list[int]:
    # Per order: [hyp n-gram count, ref n-gram count, clipped matches]. Whitespace is removed
    # first (sacreBLEU's default whitespace=False), so n-grams may span word boundaries.
    hyp = "".join(hyp.split())
    ref = "".join(ref.split())
    stats: list[int] = []
    for n in range(1, _CHRF_ORDER + 1):
        h = Counter(hyp[i : i + n] for i in range(len(hyp) - n + 1))
        r = Counter(ref[i : i + n] for i in range(len(ref) - n + 1))
        # sacreBLEU 2.x counts no hypothesis n-grams of an order the reference is too short to
        # have (its "don't count hits if no reference exists"); this matters when corpus-summing.
        n_hyp = sum(h.values()) if r else 0
        stats += [n_hyp, sum(r.values()), sum(min(c, r[g]) for g, c in h.items())]
    return stats


def _chrf_from_stats(stats: Sequence[float]) -> float:
    # sacreBLEU CHRF._compute_f_score without eps smoothing (its default, the chrF++.py way):
    # average precision and recall over the orders where both sides have n-grams, then F-beta.
    avg_p = avg_r = 0.0
    effective = 0
    for n in range(_CHRF_ORDER):
        n_hyp, n_ref, n_match = stats[3 * n : 3 * n + 3]
        if n_hyp > 0 and n_ref > 0:
            avg_p += n_match / n_hyp
            avg_r += n_match / n_ref
            effective += 1
    if effective == 0:
        return 0.0
    avg_p /= effective
    avg_r /= effective
    if avg_p + avg_r == 0:
        return 0.0
    b2 = _CHRF_BETA**2
    return (1 + b2) * avg_p * avg_r / (b2 * avg_p + avg_r)


def _corpus_chrf(predictions: list[str], references: list[list[str]]) -> float:
    """sacreBLEU ``corpus_chrf`` defaults: char 6-grams, beta 2, statistics summed over the corpus;
    with several references, each sentence uses the one giving it the best sentence chrF."""
    totals = [0] * (3 * _CHRF_ORDER)
    for pred, refs in zip(predictions, references):
        best, best_f = None, -1.0
        for ref in refs:
            stats = _char_ngram_stats(pred, ref)
            f = _chrf_from_stats(stats)
            if f > best_f:
                best, best_f = stats, f
        if best is not None:
            totals = [a + b for a, b in zip(totals, best)]
    return _chrf_from_stats(totals)


def bleu_chrf(predictions: list[str], references: list[str] | list[list[str]]) -> dict[str, float]:
    """Corpus-level BLEU-4 and chrF on a 0..1 scale (sacreBLEU's numbers divided by 100).

    ``references[i]`` is either one reference string or a list of alternative references.

    - BLEU: sacreBLEU ``corpus_bleu`` defaults — 13a tokenization, case-sensitive, clipped n-gram
      precisions up to 4 pooled over the corpus, brevity penalty from the closest reference
      length, and **exp smoothing** (the k-th order with no match gets 1/(2^k * total)).
    - chrF: sacreBLEU ``corpus_chrf`` defaults — character n-grams 1..6 with whitespace removed,
      beta = 2, no word n-grams (not chrF++).

    Both 0.0 for empty inputs.
    """
    _check_same_length("bleu_chrf", predictions, references)
    if not predictions:
        return {"bleu": 0.0, "chrf": 0.0}
    refs = _as_reference_lists(references)
    preds = list(predictions)
    return {"bleu": _corpus_bleu(preds, refs), "chrf": _corpus_chrf(preds, refs)}


# --------------------------------------------------------------------------------------------
# retrieval


def retrieval_metrics(
    similarity, relevant: list[int], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@k and mean reciprocal rank for one relevant document per query.

    ``similarity`` is a 2D array ``[n_queries, n_docs]`` (higher = more similar) and
    ``relevant[i]`` the index of query i's relevant document. The relevant document's rank is
    1 + the number of *other* documents scoring >= it: ties are broken pessimistically, so a
    degenerate model that scores everything equal gets the worst rank, not a lucky one. A nan
    score on the relevant document also gets the worst rank. Returns ``{"recall@k" for k in ks,
    "mrr"}``; all 0.0 when there are no queries.
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
    # Count every doc scoring >= the relevant one, minus the relevant doc itself.
    ranks = (sim >= rel_scores[:, None]).sum(axis=1)  # includes itself when not nan
    ranks = np.where(np.isnan(rel_scores), n_docs, ranks)
    out = {f"recall@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["mrr"] = float(np.mean(1.0 / ranks))
    return out


# --------------------------------------------------------------------------------------------
# language modelling

# exp(100) ~ 2.7e43: far beyond any meaningful perplexity, and far from float overflow (~exp(709)),
# so a diverged run logs a large finite number instead of raising OverflowError or writing inf.
MAX_LOG_PERPLEXITY = 100.0


def perplexity(mean_loss: float) -> float:
    """``exp(mean_loss)`` with the loss clipped at ``MAX_LOG_PERPLEXITY`` to avoid overflow.

    ``mean_loss`` is the mean token cross-entropy in nats. A nan loss returns nan (the run
    diverged; hiding that would be worse than a nan in the log).
    """
    loss = float(mean_loss)
    if math.isnan(loss):
        return float("nan")
    return math.exp(min(loss, MAX_LOG_PERPLEXITY))
