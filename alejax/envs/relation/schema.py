"""The records of relation extraction (tokens with an optional dependency tree, entity mentions, labelled pairs)
and the relation schema with its type constraints.

Every source, the synthetic generator and the loaders of TACRED-style JSON, SemEval-2010 Task 8 and CoNLL-U,
produces the same `Sentence`, so grounding, refinement and the metrics never care where a sentence came from.
Token heads are 1-based as in CoNLL-U (0 is the root); a sentence without a tree has every head None.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

NO_RELATION = "no_relation"
ANY_TYPE = ""  # an untyped entity (SemEval-2010 Task 8) matches every type constraint


@dataclasses.dataclass(frozen=True)
class Token:
    form: str
    lemma: str = "_"
    upos: str = "_"
    head: int | None = None  # 1-based index of the head token, 0 for the root, None when there is no tree
    deprel: str = "_"
    misc: str = "_"  # CoNLL-U MISC, e.g. SpaceAfter=No


@dataclasses.dataclass(frozen=True)
class Entity:
    id: str  # "e0", "e1", ... in order of position
    start: int  # first token, 0-based
    end: int  # one past the last token
    type: str = ANY_TYPE


@dataclasses.dataclass(frozen=True)
class Pair:
    """A candidate (subject, object) pair and its gold label; `tag` names the hard-negative type of a
    NO-RELATION pair ("" for positives and for data that carries no tags)."""

    subj: str
    obj: str
    label: str
    tag: str = ""


@dataclasses.dataclass(frozen=True)
class Sentence:
    id: str
    tokens: tuple[Token, ...]
    entities: tuple[Entity, ...]
    pairs: tuple[Pair, ...]
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def words(self) -> list[str]:
        return [t.form for t in self.tokens]

    @property
    def has_tree(self) -> bool:
        return bool(self.tokens) and all(t.head is not None for t in self.tokens)

    @property
    def heads(self) -> list[int]:
        return [t.head for t in self.tokens]

    @property
    def deprels(self) -> list[str]:
        return [t.deprel for t in self.tokens]

    @property
    def text(self) -> str:
        return detokenize(self.tokens)

    def entity(self, entity_id: str) -> Entity:
        for e in self.entities:
            if e.id == entity_id:
                return e
        raise KeyError(f"sentence {self.id!r} has no entity {entity_id!r}")

    def mention(self, entity_id: str) -> str:
        e = self.entity(entity_id)
        return " ".join(self.words[e.start : e.end])

    def with_tree(self, heads: list[int], deprels: list[str]) -> "Sentence":
        """The same sentence with another dependency tree (a parser's)."""
        if len(heads) != len(self.tokens) or len(deprels) != len(self.tokens):
            raise ValueError(f"a tree of {len(heads)} heads for {len(self.tokens)} tokens")
        tokens = tuple(
            dataclasses.replace(t, head=h, deprel=d) for t, h, d in zip(self.tokens, heads, deprels)
        )
        return dataclasses.replace(self, tokens=tokens)


def detokenize(tokens: Iterable[Token]) -> str:
    """Text from tokens, honouring CoNLL-U's SpaceAfter=No."""
    out = []
    for t in tokens:
        out.append(t.form)
        if "SpaceAfter=No" not in t.misc.split("|"):
            out.append(" ")
    return "".join(out).rstrip()


@dataclasses.dataclass(frozen=True)
class Relation:
    name: str
    subj_type: str
    obj_type: str
    description: str = ""


@dataclasses.dataclass(frozen=True)
class Schema:
    """The label set and each relation's (subject type, object type) constraint."""

    relations: tuple[Relation, ...]
    no_relation: str = NO_RELATION

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.relations]

    @property
    def labels(self) -> list[str]:
        """Every label a prediction may use: the relations, then NO-RELATION."""
        return self.names + [self.no_relation]

    def relation(self, name: str) -> Relation:
        for r in self.relations:
            if r.name == name:
                return r
        raise KeyError(f"unknown relation {name!r}; the schema has {', '.join(self.names)}")

    def allows(self, label: str, subj_type: str, obj_type: str) -> bool:
        """Does `label` fit a pair of these entity types? NO-RELATION always does."""
        if label == self.no_relation:
            return True
        matching = [r for r in self.relations if r.name == label]
        return any(_type_fits(r.subj_type, subj_type) and _type_fits(r.obj_type, obj_type) for r in matching)

    def is_candidate(self, subj_type: str, obj_type: str) -> bool:
        """Could any relation hold between entities of these types (in this order)?"""
        return any(self.allows(r.name, subj_type, obj_type) for r in self.relations)


def _type_fits(constraint: str, entity_type: str) -> bool:
    return constraint == ANY_TYPE or entity_type == ANY_TYPE or constraint == entity_type


# The synthetic world's schema: 8 relations over 5 entity types. Every type pair that has a relation is a
# candidate pair in a generated sentence, so most candidates are NO-RELATION.
SYNTHETIC_SCHEMA = Schema(
    (
        Relation("works_for", "PER", "ORG", "the person is employed by the organisation"),
        Relation("founded", "PER", "ORG", "the person founded the organisation"),
        Relation("born_in", "PER", "CITY", "the person was born in the city"),
        Relation("lives_in", "PER", "CITY", "the person lives in the city"),
        Relation("headquartered_in", "ORG", "CITY", "the organisation's headquarters are in the city"),
        Relation("acquired", "ORG", "ORG", "the first organisation acquired the second"),
        Relation("produces", "ORG", "PRODUCT", "the organisation makes the product"),
        Relation("located_in", "CITY", "COUNTRY", "the city is in the country"),
    )
)


def schema_from_sentences(sentences: Iterable[Sentence], no_relation: str = NO_RELATION) -> Schema:
    """The schema a loaded data set implies: each positive label with the entity types it was seen with
    (a label seen with several type pairs gets one entry per pair; untyped data gives unconstrained labels)."""
    seen: dict[tuple[str, str, str], None] = {}
    for s in sentences:
        types = {e.id: e.type for e in s.entities}
        for p in s.pairs:
            if p.label != no_relation:
                seen[(p.label, types[p.subj], types[p.obj])] = None
    return Schema(tuple(Relation(n, st, ot) for n, st, ot in sorted(seen)), no_relation)
