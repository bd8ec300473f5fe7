"""Scores of relation extraction, TACRED-style.

- micro-F1 over positive labels: a prediction is a (pair, relation) triple; NO-RELATION is never counted as a
  prediction or as gold; precision is 1 when nothing is predicted and recall 0 when there is no gold positive
  (the conventions of the TACRED scorer); a predicted pair outside the candidate pairs is a false positive.
- hallucination rate: gold NO-RELATION pairs labelled with any relation / gold NO-RELATION pairs (0 when
  there is none), also broken down by hard-negative tag.
"""

from __future__ import annotations

from typing import Hashable, Iterable, Mapping, Sequence

import numpy as np

from alejax.envs.relation.schema import NO_RELATION, Sentence

Key = Hashable  # one candidate pair, e.g. (sentence id, subject id, object id)


def relation_scores(
    gold: Mapping[Key, str],
    predicted: Iterable[tuple[Key, str]],
    tags: Mapping[Key, str] | None = None,
    no_relation: str = NO_RELATION,
) -> dict:
    """`gold`: every candidate pair's label (NO-RELATION included); `predicted`: (pair, label) triples, any
    number per pair (duplicates count once; NO-RELATION entries are ignored); `tags`: hard-negative types."""
    predictions = {(k, label) for k, label in predicted if label != no_relation}
    gold_positive = {(k, label) for k, label in gold.items() if label != no_relation}
    correct = len(predictions & gold_positive)
    precision = correct / len(predictions) if predictions else 1.0
    recall = correct / len(gold_positive) if gold_positive else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    negatives = [k for k, label in gold.items() if label == no_relation]
    labelled = {k for k, _ in predictions}
    hallucinated = [k for k in negatives if k in labelled]
    per_tag: dict[str, dict] = {}
    for k in negatives:
        tag = (tags or {}).get(k, "") or "untagged"
        entry = per_tag.setdefault(tag, {"n": 0, "hallucinated": 0})
        entry["n"] += 1
        entry["hallucinated"] += k in labelled
    for entry in per_tag.values():
        entry["error"] = entry["hallucinated"] / entry["n"]
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "hallucination_rate": len(hallucinated) / len(negatives) if negatives else 0.0,
        "n_gold_positive": len(gold_positive),
        "n_predicted": len(predictions),
        "n_correct": correct,
        "n_negative": len(negatives),
        "n_hallucinated": len(hallucinated),
        "per_tag": per_tag,
    }


def label_scores(
    gold: Sequence[str],
    predicted: Sequence[str],
    tags: Sequence[str] | None = None,
    no_relation: str = NO_RELATION,
) -> dict:
    """The same scores for aligned per-pair label lists (one predicted label per gold pair)."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    return relation_scores(
        dict(enumerate(gold)),
        enumerate(predicted),
        None if tags is None else dict(enumerate(tags)),
        no_relation,
    )


def gold_of(sentences: Iterable[Sentence]) -> tuple[dict, dict]:
    """(gold labels, hard-negative tags) keyed by (sentence id, subject id, object id)."""
    gold, tags = {}, {}
    for s in sentences:
        for p in s.pairs:
            key = (s.id, p.subj, p.obj)
            gold[key] = p.label
            if p.tag:
                tags[key] = p.tag
    return gold, tags


def selective(predicted: Sequence[tuple[Key, str]], confidence: Sequence[float], threshold: float) -> list:
    """The predictions an extractor keeps when it abstains (answers NO-RELATION) below `threshold`:
    `confidence[i]` is the extractor's probability of prediction i (e.g. its greedy answer's)."""
    if len(predicted) != len(confidence):
        raise ValueError(f"{len(predicted)} predictions but {len(confidence)} confidences")
    return [p for p, c in zip(predicted, confidence) if c >= threshold]


def threshold_for_f1(
    gold: Mapping[Key, str],
    predicted: Sequence[tuple[Key, str]],
    confidence: Sequence[float],
    target_f1: float,
    no_relation: str = NO_RELATION,
    max_thresholds: int = 64,
) -> float:
    """The abstention threshold whose selective predictions have the micro-F1 closest to `target_f1` from
    above (ties: the lower hallucination rate), among 0 and up to `max_thresholds` quantiles of the positive
    predictions' confidences: the operating point to compare with another extractor at equal F1 (choose it on
    validation data, then score it held out). 0 (no abstention) when no threshold reaches the target."""
    positive = sorted({c for (_, label), c in zip(predicted, confidence) if label != no_relation})
    if len(positive) > max_thresholds:
        positive = [positive[round(i)] for i in np.linspace(0, len(positive) - 1, max_thresholds)]
    best, best_key = 0.0, None
    for threshold in [0.0, *positive]:
        s = relation_scores(gold, selective(predicted, confidence, threshold), no_relation=no_relation)
        if s["f1"] >= target_f1:
            key = (s["f1"], s["hallucination_rate"])
            if best_key is None or key < best_key:
                best, best_key = threshold, key
    return best
