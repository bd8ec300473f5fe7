"""Grounding one entity pair in the dependency tree: the shortest dependency path (SDP) between the two
entities on the undirected tree (networkx), the sentence reduced to the SDP words plus their immediate syntactic
context, and the path verbalised as a structural cue, e.g. `Alice <-nsubj- works -obl-> Acme`.

The immediate context keeps the function words that decide whether the path states the relation at all:
auxiliaries and modals ("may"), copulas, subordinators ("if", "to"), case markers ("for") and adverbial
modifiers ("not", "never") attached to a path word. Without them a negated or hypothetical relation reads like
an asserted one.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

from alejax.envs.relation.schema import Sentence

# Dependents of path words that stay in the simplified context (UD relation names before any ":" subtype).
CONTEXT_RELATIONS = frozenset({"aux", "cop", "mark", "case", "advmod", "neg", "expl"})
ROOT = -1  # the virtual root on a path (only when a parse has several roots)


def _networkx():
    try:
        import networkx
    except ImportError as e:  # networkx is in requirements.txt; say so when an install lacks it
        raise ImportError("the shortest dependency path needs networkx: pip install networkx") from e
    return networkx


def _require_tree(sentence: Sentence) -> None:
    if not sentence.has_tree:
        raise ValueError(
            f"sentence {sentence.id!r} has no dependency tree; parse it first "
            "(alejax.envs.relation.parsing.parse_sentences, e.g. with the spaCy parser)"
        )


def dependency_graph(sentence: Sentence):
    """The tree as an undirected networkx graph over 0-based token indices plus ROOT (-1); each edge
    carries its dependency relation."""
    _require_tree(sentence)
    graph = _networkx().Graph()
    graph.add_node(ROOT)
    for i, token in enumerate(sentence.tokens):
        graph.add_edge(i, token.head - 1 if token.head else ROOT, deprel=token.deprel)
    return graph


def entity_head(sentence: Sentence, entity_id: str) -> int:
    """The token of the mention that governs it: the one whose head lies outside the span (the shallowest
    one if a parse splits the span, the leftmost on a tie)."""
    _require_tree(sentence)
    entity = sentence.entity(entity_id)
    span = range(entity.start, entity.end)

    def depth(i: int) -> int:
        d, node = 0, i
        while node >= 0 and d <= len(sentence.tokens):
            node, d = sentence.tokens[node].head - 1, d + 1
        return d

    governors = [i for i in span if sentence.tokens[i].head - 1 not in span]
    return min(governors or list(span), key=lambda i: (depth(i), i))


def shortest_dependency_path(sentence: Sentence, subj: str, obj: str) -> list[int]:
    """Token indices from the subject's head token to the object's, along the undirected tree."""
    graph = dependency_graph(sentence)
    return list(_networkx().shortest_path(graph, entity_head(sentence, subj), entity_head(sentence, obj)))


def verbalise_path(sentence: Sentence, path: list[int]) -> str:
    """`Alice <-nsubj- works -obl-> Acme`: arrows point from head to dependent, labelled with the relation."""
    words = sentence.words

    def word(i: int) -> str:
        return "ROOT" if i == ROOT else words[i]

    parts = [word(path[0])]
    for u, v in zip(path, path[1:]):
        if u != ROOT and sentence.tokens[u].head - 1 == v:  # u depends on v
            parts.append(f"<-{sentence.tokens[u].deprel}- {word(v)}")
        else:
            parts.append(f"-{sentence.tokens[v].deprel}-> {word(v)}")
    return " ".join(parts)


def simplified_tokens(
    sentence: Sentence, subj: str, obj: str, path: list[int], context_relations: Iterable[str] | None = None
) -> list[int]:
    """The tokens kept by SDP simplification, in sentence order: both mentions, the path, and the path
    words' dependents whose relation is in `context_relations` (None keeps every dependent)."""
    relations = CONTEXT_RELATIONS if context_relations is None else frozenset(context_relations)
    keep = {i for i in path if i != ROOT}
    for entity_id in (subj, obj):
        e = sentence.entity(entity_id)
        keep.update(range(e.start, e.end))
    on_path = set(keep)
    for i, token in enumerate(sentence.tokens):
        if token.head - 1 in on_path and token.deprel.split(":")[0] in relations:
            keep.add(i)
    return sorted(keep)


def render(sentence: Sentence, marks: dict[str, str], keep: Iterable[int] | None = None) -> str:
    """The tokens (all, or those in `keep`) joined by spaces, each marked mention as `[MARK words]`."""
    kept = set(range(len(sentence.tokens))) if keep is None else set(keep)
    starts = {sentence.entity(e).start: (m, sentence.entity(e).end) for e, m in marks.items()}
    out, i, words = [], 0, sentence.words
    while i < len(words):
        if i in starts:
            mark, end = starts[i]
            out.append(f"[{mark} {' '.join(words[i:end])}]")
            i = end
            continue
        if i in kept:
            out.append(words[i])
        i += 1
    return " ".join(out)


@dataclasses.dataclass(frozen=True)
class Grounding:
    """What the grounding step sees of one pair."""

    path: tuple[int, ...]  # token indices on the SDP (ROOT = -1 where a parse has several roots)
    context: str  # the SDP-simplified sentence with [S ...] and [O ...] marks
    path_text: str  # the verbalised path
    sdp_length: int  # edges on the path


def ground(
    sentence: Sentence, subj: str, obj: str, context_relations: Iterable[str] | None = None
) -> Grounding:
    path = shortest_dependency_path(sentence, subj, obj)
    keep = simplified_tokens(sentence, subj, obj, path, context_relations)
    return Grounding(
        path=tuple(path),
        context=render(sentence, {subj: "S", obj: "O"}, keep),
        path_text=verbalise_path(sentence, path),
        sdp_length=len(path) - 1,
    )
