"""Seeded synthetic English sentences for relation extraction, each with its gold dependency tree.

A sentence is built as an ordered dependency tree (UD v2 relations: nsubj, obj, obl + case, cop, aux,
xcomp + mark, acl:relcl, conj + cc, advcl, flat for multi-word names) and read off in order, so every tree is
projective and has a single root by construction; the tests check both. Every candidate pair (an ordered
pair of mentions whose types fit some relation of `SYNTHETIC_SCHEMA`) gets its gold label, and every
NO-RELATION pair a hard-negative tag from `HARD_NEGATIVE_TYPES`:

- distractor_clause: the two mentions sit in different conjoined clauses, linked only through them;
- negated: "Alice did not join Acme", "Alice never worked for Acme", "Alice failed to join Acme";
- hypothetical: "Alice may join Acme", "Alice hopes to join Acme", "If Alice joins Acme, prices will rise.";
- third_entity: the trigger belongs to a third mention ("Alice met Bob, who works for Acme": Alice, Acme);
- relative_clause: a relative clause stands between the pair ("Alice, who met Bob, founded Acme": Bob, Acme);
- long_coordination: a long coordination stands between the pair ("Alice thanked Bob, Carol and Dan and
  founded Acme": Dan, Acme);
- reverse: the pair the other way round holds the relation ("Acme acquired Orbis": Orbis, Acme);
- no_trigger: nothing relational links the pair ("Alice visited Dunmore").

Difficulty (`DIFFICULTIES`) bounds the clause count and the control-verb chain depth ("Alice managed to
continue to work for Acme"), which sets the SDP length, and the length of coordinations. Splits
(`SPLITS`) choose entity names and template phrasings: the held-out ones use names and phrasings (relation
triggers, control verbs, modals, non-relational verbs, filler clauses) that training never sees.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Sequence

from alejax.envs.relation import lexicon as lx
from alejax.envs.relation.schema import NO_RELATION, SYNTHETIC_SCHEMA, Entity, Pair, Sentence, Token

HARD_NEGATIVE_TYPES = (
    "distractor_clause",
    "negated",
    "hypothetical",
    "third_entity",
    "relative_clause",
    "long_coordination",
    "reverse",
    "no_trigger",
)


@dataclasses.dataclass(frozen=True)
class Difficulty:
    max_clauses: int  # clauses per sentence (relative clauses, conjoined clauses, conditional hosts count)
    max_chain: int  # control verbs above a trigger: each adds one edge to the SDP
    max_coordination: int  # conjuncts in a coordination

    def __post_init__(self):
        if self.max_clauses < 1 or self.max_chain < 0 or not 1 <= self.max_coordination <= 6:
            raise ValueError(f"{self}: need max_clauses >= 1, max_chain >= 0 and 1 <= max_coordination <= 6")


DIFFICULTIES = {
    "easy": Difficulty(max_clauses=1, max_chain=0, max_coordination=1),
    "medium": Difficulty(max_clauses=2, max_chain=1, max_coordination=3),
    "hard": Difficulty(max_clauses=4, max_chain=3, max_coordination=5),
}

# split -> (entity names, template phrasings)
SPLITS = {
    "train": (lx.TRAIN, lx.TRAIN),
    "dev": (lx.TRAIN, lx.TRAIN),  # the training distribution, another seed stream
    "test": (lx.HELDOUT, lx.HELDOUT),
    "test_entities": (lx.HELDOUT, lx.TRAIN),
    "test_templates": (lx.TRAIN, lx.HELDOUT),
}

_POLARITIES = ("asserted", "negated", "hypothetical")
_POLARITY_WEIGHTS = (0.5, 0.25, 0.25)
_PLAN_WEIGHTS = {
    "simple": 3.0,
    "conjoined": 2.0,
    "relcl_object": 2.0,
    "relcl_subject": 2.0,
    "coordinated_vp": 1.5,
}


def difficulty_of(difficulty: str | Difficulty | dict) -> Difficulty:
    if isinstance(difficulty, Difficulty):
        return difficulty
    if isinstance(difficulty, dict):
        fields = {f.name for f in dataclasses.fields(Difficulty)}
        if set(difficulty) != fields:
            raise ValueError(f"difficulty={difficulty!r}: expected exactly the keys {sorted(fields)}")
        return Difficulty(**difficulty)
    if difficulty not in DIFFICULTIES:
        raise ValueError(
            f"difficulty={difficulty!r}: expected one of {', '.join(DIFFICULTIES)} or a Difficulty"
        )
    return DIFFICULTIES[difficulty]


def generate_sentence(
    seed: int, split: str = "train", difficulty: str | Difficulty | dict = "medium"
) -> Sentence:
    """The sentence of `seed` in `split` (deterministic: the same arguments give the same sentence)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    level = difficulty_of(difficulty)
    name = difficulty if isinstance(difficulty, str) else "custom"
    rng = random.Random(f"relation/{split}/{name}/{level}/{seed}")
    for _ in range(50):  # a draw that runs out of distinct names is redrawn from the same stream
        try:
            return _Sketch(rng, split, level).sentence(f"{split}-{name}-{seed}", name)
        except _OutOfNames:
            continue
    raise RuntimeError(f"could not draw a sentence for seed {seed} ({split}, {difficulty})")


def generate_corpus(
    n: int, split: str = "train", difficulty: str | Difficulty | dict = "medium", first_seed: int = 0
) -> list[Sentence]:
    return [generate_sentence(s, split, difficulty) for s in range(first_seed, first_seed + n)]


# --- ordered dependency trees ------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class _Node:
    form: str
    upos: str
    lemma: str = ""
    deprel: str = "root"
    left: list = dataclasses.field(default_factory=list)
    right: list = dataclasses.field(default_factory=list)
    entity: int | None = None  # key of the mention this token belongs to


def _dep(deprel: str, node: _Node) -> _Node:
    node.deprel = deprel
    return node


def _word(form: str, upos: str, lemma: str | None = None) -> _Node:
    return _Node(form, upos, form.lower() if lemma is None else lemma)


def _coordinate(nodes: Sequence[_Node]) -> _Node:
    """`A , B and C`: the first conjunct heads the others (conj); "," or "and" attaches to the one it
    precedes."""
    first = nodes[0]
    for k, node in enumerate(nodes[1:], start=1):
        joiner = (
            _dep("cc", _word("and", "CCONJ")) if k == len(nodes) - 1 else _dep("punct", _word(",", "PUNCT"))
        )
        node.left.insert(0, joiner)
        first.right.append(_dep("conj", node))
    return first


def _form(lemma: str, form: str, plural: bool = False) -> str:
    """form: base, finite-pres, finite-past or participle."""
    if form == "base":
        return lemma
    third, past, participle = lx.VERB_FORMS[lemma]
    if lemma == "be" and form != "participle":
        return {"finite-pres": "are" if plural else "is", "finite-past": "were" if plural else "was"}[form]
    if form == "finite-pres":
        return lemma if plural else third
    return past if form == "finite-past" else participle


class _OutOfNames(Exception):
    pass


@dataclasses.dataclass
class _Mention:
    key: int
    type: str
    words: tuple[str, ...]


class _Sketch:
    """One sentence under construction: its entities, facts, hard-negative tags and template ids."""

    def __init__(self, rng: random.Random, split: str, level: Difficulty):
        self.rng, self.split, self.level = rng, split, level
        self.entity_split, self.template_split = SPLITS[split]
        self.mentions: list[_Mention] = []
        self.facts: dict[tuple[int, int], str] = {}
        self.tags: dict[tuple[int, int], str] = {}
        self.templates: set[str] = set()
        self.clauses = 0
        self.used: set[str] = set()

    # --- choices ---
    def pick(self, items):
        pool = [x for x in items if x.split == self.template_split]
        choice = self.rng.choice(pool)
        self.templates.add(choice.id)
        return choice

    def trigger(self, relation: str) -> lx.Trigger:
        return self.pick([t for t in lx.TRIGGERS if t.relation == relation])

    def polarity(self) -> str:
        return self.rng.choices(_POLARITIES, _POLARITY_WEIGHTS)[0]

    def relation(self, subj_types=None, obj_type=None, exclude=()):
        options = [
            r
            for r in SYNTHETIC_SCHEMA.relations
            if (subj_types is None or r.subj_type in subj_types)
            and (obj_type is None or r.obj_type == obj_type)
            and r.name not in exclude
        ]
        return self.rng.choice(options) if options else None

    def verbs(self, subj_type=None, obj_type=None) -> list[lx.Verb]:
        return [
            v
            for v in lx.NON_RELATIONAL_VERBS
            if (subj_type is None or v.subj_type == subj_type)
            and (obj_type is None or v.obj_type == obj_type)
        ]

    # --- entities ---
    def entity(self, entity_type: str) -> _Mention:
        split, rng = self.entity_split, self.rng

        def fresh(pool: list[str]) -> str:
            left = [w for w in pool if w not in self.used]
            if not left:
                raise _OutOfNames(entity_type)
            word = rng.choice(left)
            self.used.add(word)
            return word

        if entity_type == "PER":
            words = (fresh(lx.FIRST_NAMES[split]),)
            if rng.random() < 0.5:
                words += (rng.choice(lx.SURNAMES[split]),)
        elif entity_type == "ORG":
            words = (fresh(lx.ORG_STEMS[split]),) + tuple(w for w in [rng.choice(lx.ORG_SUFFIXES)] if w)
        elif entity_type == "PRODUCT":
            words = (fresh(lx.PRODUCT_STEMS[split]),) + tuple(
                w for w in [rng.choice(lx.PRODUCT_SUFFIXES)] if w
            )
        elif entity_type == "CITY":
            words = (fresh(lx.CITIES[split]),)
        elif entity_type == "COUNTRY":
            words = (fresh(lx.COUNTRIES[split]),)
        else:
            raise ValueError(f"no names for entity type {entity_type!r}")
        mention = _Mention(len(self.mentions), entity_type, words)
        self.mentions.append(mention)
        return mention

    def node(self, mention: _Mention) -> _Node:
        """A multi-word name is headed by its first word, the rest attached as flat."""
        head = _Node(mention.words[0], "PROPN", mention.words[0], entity=mention.key)
        for w in mention.words[1:]:
            upos = "NUM" if w.isdigit() else "PROPN"
            head.right.append(_dep("flat", _Node(w, upos, w, entity=mention.key)))
        return head

    # --- facts ---
    def relate(self, subjects: Sequence[_Mention], obj: _Mention, relation: str, polarity: str) -> None:
        for s in subjects:
            if polarity == "asserted":
                self.facts[(s.key, obj.key)] = relation
            else:
                self.tags[(s.key, obj.key)] = polarity

    def tag_both(self, a: _Mention, b: _Mention, tag: str) -> None:
        for pair in ((a.key, b.key), (b.key, a.key)):
            self.tags.setdefault(pair, tag)

    # --- clauses ---
    def clause(
        self,
        subject: _Node | None,
        plural: bool,
        trigger: lx.Trigger,
        obj: _Node,
        polarity: str,
        conditional: bool = False,
    ) -> _Node:
        """A relational clause; returns its head. `subject` None: the subject is shared with a preceding
        conjoined verb phrase. The polarity is realised by do-support negation, "never", a modal, a negative
        or non-factive control verb, or (`conditional`) by the caller's "if"."""
        rng, level = self.rng, self.level
        chainable = trigger.chainable and level.max_chain > 0
        depth = rng.randint(0, level.max_chain) if chainable else 0
        mode = "plain"
        if polarity == "negated" and not conditional:
            mode = rng.choice(["do_not", "never"] + (["control"] if chainable else []))
        elif polarity == "hypothetical" and not conditional:
            mode = rng.choice(["modal"] + (["control"] if chainable else []))
        if mode == "control":
            depth = max(depth, 1)
        head, be = self.predicate(trigger, obj, plural)
        controls: list[_Node] = []
        if depth:
            family = polarity if mode == "control" else "asserted"
            lemmas = [self.pick(lx.CONTROL_VERBS[family]).lemma]
            for _ in range(depth - 1):  # never the same verb twice in a row ("manage to manage to")
                lemmas.append(
                    self.pick([w for w in lx.CONTROL_VERBS["asserted"] if w.lemma != lemmas[-1]]).lemma
                )
            controls = [_Node(lemma, "VERB", lemma) for lemma in lemmas]
            chain = controls + [head]
            for upper, lower in zip(chain, chain[1:]):
                lower.left.insert(0, _dep("mark", _word("to", "PART")))
                upper.right.insert(0, _dep("xcomp", lower))
            if be is not None:
                be.form = "be"
        top = controls[0] if controls else head
        tense = trigger.tense
        if top is head and be is not None:  # "is based in", "was born in", "is the founder of"
            slot = head.left.index(be)
            if mode in ("do_not", "never"):
                be.form = _form("be", f"finite-{tense}", plural)
                head.left.insert(slot + 1, _dep("advmod", _word("not", "PART")))
            elif mode == "modal":
                modal = _dep("aux", _word(self.pick(lx.MODALS).lemma, "AUX"))
                extra = [modal, _dep("aux", _word("have", "AUX"))] if tense == "past" else [modal]
                be.form = "been" if tense == "past" else "be"
                head.left[slot:slot] = extra
            else:
                be.form = _form("be", f"finite-{tense}", plural)
        else:  # a verb on top: the trigger verb or the first control verb
            lemma = top.lemma
            if mode == "do_not":
                top.form = lemma
                do = _word(_form("do", f"finite-{tense}", plural), "AUX", "do")
                top.left[0:0] = [_dep("aux", do), _dep("advmod", _word("not", "PART"))]
            elif mode == "modal":
                modal = _dep("aux", _word(self.pick(lx.MODALS).lemma, "AUX"))
                if tense == "past":
                    top.form = _form(lemma, "participle")
                    top.left[0:0] = [modal, _dep("aux", _word("have", "AUX"))]
                else:
                    top.form = lemma
                    top.left.insert(0, modal)
            else:
                top.form = _form(lemma, f"finite-{tense}", plural)
                if mode == "never":
                    top.left.insert(0, _dep("advmod", _word("never", "ADV")))
        if subject is not None:
            passive_subject = top is head and trigger.kind == "passive"
            top.left.insert(0, _dep("nsubj:pass" if passive_subject else "nsubj", subject))
        if conditional:
            top.left.insert(0, _dep("mark", _word("if", "SCONJ")))
        self.clauses += 1
        return top

    def predicate(self, trigger: lx.Trigger, obj: _Node, plural: bool) -> tuple[_Node, _Node | None]:
        """The trigger's head word with the object attached, and its "be" (None for a plain verb); verb forms
        are set by `clause`."""
        self.templates.add(trigger.id)
        if trigger.prep:
            obj.left.insert(0, _dep("case", _word(trigger.prep, "ADP")))
        if trigger.kind == "verb":
            head = _Node(trigger.lemma, "VERB", trigger.lemma)
            head.right.append(_dep("obl" if trigger.prep else "obj", obj))
            return head, None
        be = _dep("aux:pass" if trigger.kind == "passive" else "cop", _word("be", "AUX"))
        if trigger.kind == "passive":
            head = _Node(_form(trigger.lemma, "participle"), "VERB", trigger.lemma)
            head.left.append(be)
            head.right.append(_dep("obl", obj))
            return head, be
        noun = lx.NOUN_PLURALS[trigger.lemma] if plural else trigger.lemma
        head = _Node(noun, "NOUN", trigger.lemma)
        head.left.append(be)
        if trigger.det and (not plural or trigger.det == "the"):
            head.left.append(_dep("det", _word(trigger.det, "DET")))
        head.right.append(_dep("nmod", obj))
        return head, be

    def plain_clause(self, subject: _Node, verb: lx.Verb, obj: _Node, plural: bool = False) -> _Node:
        """A clause with a non-relational verb ("Alice met Bob")."""
        head = _Node(_form(verb.lemma, f"finite-{verb.tense}", plural), "VERB", verb.lemma)
        if verb.prep:
            obj.left.insert(0, _dep("case", _word(verb.prep, "ADP")))
        head.left.append(_dep("nsubj", subject))
        head.right.append(_dep("obl" if verb.prep else "obj", obj))
        self.clauses += 1
        return head

    def filler(self) -> _Node:
        """An entity-free host clause: "prices will rise"."""
        f = self.pick(lx.FILLERS)
        noun = _word(f.noun, "NOUN")
        if f.det:
            noun.left.append(_dep("det", _word(f.det, "DET")))
        head = _Node(f.verb, "VERB", f.verb)
        head.left += [_dep("nsubj", noun), _dep("aux", _word("will", "AUX"))]
        self.clauses += 1
        return head

    def subjects(self, entity_type: str, most: int) -> tuple[list[_Mention], _Node]:
        n = 1
        if most >= 2 and self.rng.random() < 0.25:
            n = self.rng.randint(2, most)
        mentions = [self.entity(entity_type) for _ in range(n)]
        return mentions, _coordinate([self.node(m) for m in mentions])

    # --- sentence plans ---
    def simple(self, allow_conditional: bool, most_subjects: int) -> tuple[_Node, list[_Mention]]:
        """One clause: a relation (any polarity) or, sometimes, a non-relational verb."""
        if self.rng.random() < 0.15:
            verb = self.pick(self.verbs())
            subjects, subject = self.subjects(verb.subj_type, most_subjects)
            obj = self.entity(verb.obj_type)
            head = self.plain_clause(subject, verb, self.node(obj), plural=len(subjects) > 1)
            mentions = subjects + [obj]
            # "met Bob in Dunmore": an "in" that is not lives_in (always after PER-PER verbs, whose pair is
            # no candidate, so that every sentence has one)
            if (
                verb.subj_type == "PER"
                and verb.obj_type != "CITY"
                and (verb.obj_type == "PER" or self.rng.random() < 0.4)
            ):
                place = self.entity("CITY")
                where = self.node(place)
                where.left.insert(0, _dep("case", _word("in", "ADP")))
                head.right.append(_dep("obl", where))
                mentions.append(place)
            return head, mentions
        relation = self.relation()
        subjects, subject = self.subjects(relation.subj_type, most_subjects)
        obj = self.entity(relation.obj_type)
        polarity = self.polarity()
        conditional = polarity == "hypothetical" and allow_conditional and self.rng.random() < 0.3
        head = self.clause(
            subject, len(subjects) > 1, self.trigger(relation.name), self.node(obj), polarity, conditional
        )
        self.relate(subjects, obj, relation.name, polarity)
        if conditional:  # "If Alice joins Acme, prices will rise."
            head.right.append(_dep("punct", _word(",", "PUNCT")))
            host = self.filler()
            host.left.insert(0, _dep("advcl", head))
            head = host
        return head, subjects + [obj]

    def conjoined(self) -> tuple[_Node, list[_Mention]]:
        """Independent clauses, each a plan of its own, joined by ", and" / ", but" until the clause budget
        (2..max_clauses) is spent: pairs across them are linked only through the distractor clauses."""
        budget = self.rng.randint(2, self.level.max_clauses)
        heads, groups = [], []
        while budget > 0:
            before = self.clauses
            two_clause = [p for p in ("relcl_object", "relcl_subject", "coordinated_vp") if self.allowed(p)]
            if budget - (0 if heads else 1) >= 2 and two_clause and self.rng.random() < 0.5:
                head, mentions = getattr(self, self.rng.choice(two_clause))()
            else:
                most = min(2, self.level.max_coordination)
                head, mentions = self.simple(allow_conditional=False, most_subjects=most)
            heads.append(head)
            groups.append(mentions)
            budget -= self.clauses - before
        for head in heads[1:]:
            joiner = _word(self.rng.choice(["and", "but"]), "CCONJ")
            head.left[0:0] = [_dep("punct", _word(",", "PUNCT")), _dep("cc", joiner)]
            heads[0].right.append(_dep("conj", head))
        for i, group in enumerate(groups):
            for other in groups[i + 1 :]:
                for a in group:
                    for b in other:
                        self.tag_both(a, b, "distractor_clause")
        return heads[0], [m for group in groups for m in group]

    def allowed(self, plan: str) -> bool:
        if plan == "simple":
            return True
        if plan == "coordinated_vp":
            return self.level.max_clauses >= 2 and self.level.max_coordination >= 2
        return self.level.max_clauses >= 2

    def relcl_object(self) -> tuple[_Node, list[_Mention]]:
        """ "A <verb> B, who/which <trigger> C": the relative clause's trigger belongs to B, not to A."""
        inner = self.relation(subj_types=("PER", "ORG", "CITY"))
        b, c = self.entity(inner.subj_type), self.entity(inner.obj_type)
        b_node = self.node(b)
        pronoun = _word("who" if b.type == "PER" else "which", "PRON")
        inner_polarity = self.polarity()
        relcl = self.clause(pronoun, False, self.trigger(inner.name), self.node(c), inner_polarity)
        relcl.left.insert(0, _dep("punct", _word(",", "PUNCT")))
        b_node.right.append(_dep("acl:relcl", relcl))
        self.relate([b], c, inner.name, inner_polarity)
        outer = self.relation(obj_type=b.type)
        verbs = self.verbs(obj_type=b.type)
        if outer is not None and (not verbs or self.rng.random() < 0.5):
            a = self.entity(outer.subj_type)
            polarity = self.polarity()
            head = self.clause(self.node(a), False, self.trigger(outer.name), b_node, polarity)
            self.relate([a], b, outer.name, polarity)
        else:
            verb = self.pick(verbs)
            a = self.entity(verb.subj_type)
            head = self.plain_clause(self.node(a), verb, b_node)
        self.tag_both(a, c, "third_entity")
        return head, [a, b, c]

    def relcl_subject(self) -> tuple[_Node, list[_Mention]]:
        """ "S, who/which <verb> X, <trigger> O": a relative clause between S and O; X and O are unrelated."""
        outer = self.relation(subj_types=("PER", "ORG"))  # subjects that have other relations and verbs
        s, o = self.entity(outer.subj_type), self.entity(outer.obj_type)
        s_node = self.node(s)
        pronoun = _word("who" if s.type == "PER" else "which", "PRON")
        inner = self.relation(subj_types=(s.type,), exclude=(outer.name,))
        verbs = self.verbs(subj_type=s.type)
        if self.rng.random() < 0.5:
            x = self.entity(inner.obj_type)
            polarity = self.polarity()
            relcl = self.clause(pronoun, False, self.trigger(inner.name), self.node(x), polarity)
            self.relate([s], x, inner.name, polarity)
        else:
            verb = self.pick(verbs)
            x = self.entity(verb.obj_type)
            relcl = self.plain_clause(pronoun, verb, self.node(x))
        relcl.left.insert(0, _dep("punct", _word(",", "PUNCT")))
        relcl.right.append(_dep("punct", _word(",", "PUNCT")))
        s_node.right.append(_dep("acl:relcl", relcl))
        polarity = self.polarity()
        head = self.clause(s_node, False, self.trigger(outer.name), self.node(o), polarity)
        self.relate([s], o, outer.name, polarity)
        self.tag_both(x, o, "relative_clause")
        return head, [s, x, o]

    def coordinated_vp(self) -> tuple[_Node, list[_Mention]]:
        """ "S <verb> X1, X2 and Xn and <trigger> O": the list's last member sits right before the trigger."""
        outer = self.relation(
            subj_types=("PER",)
        )  # PER-PER pairs are no candidates: the list adds no noise pairs
        verb = self.pick(self.verbs(subj_type="PER", obj_type="PER"))
        s = self.entity(outer.subj_type)
        xs = [self.entity(outer.subj_type) for _ in range(self.rng.randint(2, self.level.max_coordination))]
        o = self.entity(outer.obj_type)
        first = self.plain_clause(self.node(s), verb, _coordinate([self.node(x) for x in xs]))
        polarity = self.polarity()
        second = self.clause(None, False, self.trigger(outer.name), self.node(o), polarity)
        second.left.insert(0, _dep("cc", _word("and", "CCONJ")))
        first.right.append(_dep("conj", second))
        self.relate([s], o, outer.name, polarity)
        for x in xs:
            self.tag_both(x, o, "long_coordination")
        return first, [s, *xs, o]

    def sentence(self, sentence_id: str, difficulty_name: str) -> Sentence:
        # More clauses allowed: fewer single-clause sentences, more conjoined ones.
        weights = {**_PLAN_WEIGHTS, "simple": 6.0 / self.level.max_clauses}
        weights["conjoined"] *= max(1, self.level.max_clauses - 1)
        plans = [p for p in weights if self.allowed(p)]
        plan = self.rng.choices(plans, [weights[p] for p in plans])[0]
        if plan == "simple":
            level = self.level
            root = self.simple(
                allow_conditional=level.max_clauses >= 2, most_subjects=level.max_coordination
            )[0]
        else:
            root = getattr(self, plan)()[0]
        root.right.append(_dep("punct", _word(".", "PUNCT")))
        return self.finish(root, sentence_id, plan, difficulty_name)

    def finish(self, root: _Node, sentence_id: str, plan: str, difficulty_name: str) -> Sentence:
        order: list[_Node] = []
        parents: dict[int, _Node | None] = {}

        def visit(node: _Node, parent: _Node | None) -> None:
            for child in node.left:
                visit(child, node)
            order.append(node)
            parents[id(node)] = parent
            for child in node.right:
                visit(child, node)

        visit(root, None)
        position = {id(n): i for i, n in enumerate(order)}
        tokens = []
        for i, node in enumerate(order):
            parent = parents[id(node)]
            form = node.form[0].upper() + node.form[1:] if i == 0 else node.form
            following = order[i + 1].form if i + 1 < len(order) else ""
            tokens.append(
                Token(
                    form=form,
                    lemma=node.lemma or node.form.lower(),
                    upos=node.upos,
                    head=0 if parent is None else position[id(parent)] + 1,
                    deprel="root" if parent is None else node.deprel,
                    misc="SpaceAfter=No" if following in (",", ".") else "_",
                )
            )
        spans: dict[int, list[int]] = {}
        for i, node in enumerate(order):
            if node.entity is not None:
                spans.setdefault(node.entity, []).append(i)
        keys = sorted(spans, key=lambda k: spans[k][0])
        entity_id = {k: f"e{n}" for n, k in enumerate(keys)}
        types = {m.key: m.type for m in self.mentions}
        entities = tuple(Entity(entity_id[k], spans[k][0], spans[k][-1] + 1, types[k]) for k in keys)
        pairs = []
        for a in keys:
            for b in keys:
                if a == b or not SYNTHETIC_SCHEMA.is_candidate(types[a], types[b]):
                    continue
                label = self.facts.get((a, b), NO_RELATION)
                tag = ""
                if label == NO_RELATION:
                    tag = self.tags.get((a, b)) or ("reverse" if (b, a) in self.facts else "no_trigger")
                pairs.append(Pair(entity_id[a], entity_id[b], label, tag))
        meta = {
            "split": self.split,
            "difficulty": difficulty_name,
            "plan": plan,
            "n_clauses": self.clauses,
            "templates": sorted(self.templates),
        }
        return Sentence(sentence_id, tuple(tokens), entities, tuple(pairs), meta)
