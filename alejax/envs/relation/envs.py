"""DEPTH's two steps as text environments (one turn each, plain-text answers, no tools).

- Grounding (`relation/grounding`): one candidate pair; the observation is the SDP-simplified context and
  the verbalised path (view "sdp"), and the answer is one label. `relation/direct` is the baseline that sees
  the whole sentence instead (view "sentence").
- Refinement (`relation/refinement`): one sentence with its entities and all the local predictions (by
  default a seeded noisy predictor that omits relations, adds conflicting, duplicate and type-violating
  labels and hallucinates some; `predictor` plugs in a real grounding policy, `predictions_path` recorded
  ones); the answer is the revised set, either as edits of the local predictions (`keep`, then `- SUBJ OBJ
  LABEL` / `+ SUBJ OBJ LABEL` lines: the expert's form by default) or whole, one `SUBJ OBJ LABEL` line per
  related pair, or `none`.

Sentences come from the synthetic generator (`split`, `difficulty`) or from a file (`data_path`,
`data_format`), with the gold tree or a parser's (`parser="spacy"`). A malformed answer is shown back as an
error observation with reward 0 (`max_steps` bounds the retries); it never raises. Rewards are named in
`rewards.py` (`reward="exact"` or `"f1"` with `hallucination_penalty`, or a callable, the causal RM's hook).
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
from typing import Callable, Sequence

from alejax.envs.relation.formats import read_relation_data
from alejax.envs.relation.generator import generate_sentence
from alejax.envs.relation.parsing import make_parser
from alejax.envs.relation.rewards import Judgement, Triple, reward_function
from alejax.envs.relation.schema import SYNTHETIC_SCHEMA, Schema, Sentence, schema_from_sentences
from alejax.envs.relation.sdp import ground, render

VIEWS = ("sdp", "context", "path", "sentence")
# A local predictor: sentence -> (subj, obj, label) lines, NO-RELATION included.
LocalPredictor = Callable[[Sentence], Sequence[Triple]]


class RelationSource:
    """Sentence `seed` of the synthetic generator, or of a file (cycled), parsed by `parser` when a tree is
    needed and the gold one is not wanted (or missing)."""

    def __init__(
        self,
        split: str = "train",
        difficulty: str | dict = "medium",
        data_path: str = "",
        data_format: str = "",
        parser: str | Callable = "gold",
        schema: Schema | None = None,
    ):
        self.split, self.difficulty = split, difficulty
        self.parse = make_parser(parser)
        self.reparse = parser != "gold"
        self.cache: dict[str, Sentence] = {}
        self.sentences: list[Sentence] | None = None
        if data_path:
            sentences = [s for s in read_relation_data(data_path, data_format or None) if s.pairs]
            if not sentences:
                raise ValueError(f"{data_path}: no sentence with a candidate pair")
            self.sentences = sentences
            self.schema = schema or schema_from_sentences(sentences)
        else:
            generate_sentence(0, split, difficulty)  # bad split / difficulty: an error now, not at reset
            self.schema = schema or SYNTHETIC_SCHEMA

    def sentence(self, seed: int, needs_tree: bool = False) -> Sentence:
        if self.sentences is None:
            sentence = generate_sentence(seed, self.split, self.difficulty)
        else:
            sentence = self.sentences[seed % len(self.sentences)]
        if not needs_tree or not (self.reparse or not sentence.has_tree):
            return sentence
        if self.sentences is None:  # a generated sentence is parsed afresh (the stream is unbounded)
            return sentence.with_tree(*self.parse(sentence))
        if sentence.id not in self.cache:  # a file's sentences are parsed once each
            self.cache[sentence.id] = sentence.with_tree(*self.parse(sentence))
        return self.cache[sentence.id]


def _by_lowercase(labels: Sequence[str]) -> dict[str, str]:
    return {label.lower(): label for label in labels}


_WORD = re.compile(r"[A-Za-z0-9_:/\-]+")


def parse_label(text: str, labels: Sequence[str]) -> tuple[str | None, str | None]:
    """(label, None) when the answer names exactly one known label, else (None, what is wrong)."""
    known = _by_lowercase(labels)
    found = []
    for word in _WORD.findall(text):
        label = known.get(word.lower())
        if label is not None and label not in found:
            found.append(label)
    if len(found) == 1:
        return found[0], None
    if not found:
        return None, f"no known label in the answer; answer with one of: {', '.join(labels)}."
    return None, f"several labels ({', '.join(found)}); answer with exactly one."


def parse_triples(
    text: str,
    entity_ids: Sequence[str],
    labels: Sequence[str],
    no_relation: str,
    local: Sequence[Triple] | None = None,
) -> tuple[frozenset | None, str | None]:
    """The relation set of a refinement answer, or (None, what is wrong). Two forms:
    - the whole set: one `SUBJ OBJ LABEL` per line (or `;`), or `none` (NO-RELATION lines allowed, dropped);
    - edits of the local predictions `local`: `keep` (their relations as they are), then optional
      `- SUBJ OBJ LABEL` lines to remove and `+ SUBJ OBJ LABEL` lines to add. Accepting a mostly right input
      is then one word, not a copy of every line (a small policy copies badly)."""
    stripped = text.strip()
    if not stripped:
        return None, 'empty answer; write "keep" and edits, or one "SUBJ OBJ LABEL" line per related pair.'
    if stripped.lower().strip(".") in ("none", "no relations"):
        return frozenset(), None
    known_labels = _by_lowercase(labels)
    known_entities = {e.lower(): e for e in entity_ids}
    lines = [line for line in re.split(r"[\n;]", stripped) if line.strip()]
    edits = lines[0].strip().lower().strip(".:") == "keep"
    if edits and local is None:
        return None, "keep: there are no local predictions to keep here."
    triples = {t for t in local if t[2] != no_relation} if edits else set()
    for number, line in enumerate(lines[1:] if edits else lines, start=2 if edits else 1):
        sign = line.strip()[:1] if edits else ""
        if edits and sign not in "+-":
            return (
                None,
                f'line {number} ({line.strip()!r}): after keep, write "- SUBJ OBJ LABEL" or "+ SUBJ OBJ LABEL".',
            )
        words = re.sub(r"->|[()\[\],]", " ", line.strip()[1:] if edits else line).split()
        if len(words) != 3:
            return (
                None,
                f'line {number} ({line.strip()!r}): expected "SUBJ OBJ LABEL", e.g. e0 e1 {labels[0]}.',
            )
        subj, obj = (known_entities.get(w.lower()) for w in words[:2])
        label = known_labels.get(words[2].lower())
        if subj is None or obj is None:
            return None, f"line {number}: unknown entity; the entities are {', '.join(entity_ids)}."
        if label is None:
            return None, f"line {number}: unknown label {words[2]!r}; labels: {', '.join(labels)}."
        if sign == "-":
            triples.discard((subj, obj, label))
        elif label != no_relation:
            triples.add((subj, obj, label))
    return frozenset(triples), None


class _OneTurnEnv:
    """The shared episode logic: reset builds the observation and the gold; step parses, scores, ends."""

    tools: list[dict] = []
    system_prompt = ""

    def __init__(
        self, source: RelationSource, reward, reward_kwargs, hallucination_penalty: float, max_steps: int
    ):
        if max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        self.source, self.schema = source, source.schema
        self.reward_fn = reward_function(reward, hallucination_penalty, reward_kwargs)
        self.max_steps = max_steps
        self.observation, self.answer = "", ""
        self.gold: frozenset = frozenset()
        self.negatives: frozenset = frozenset()
        self.t, self.done = 0, True
        self.sentence: Sentence | None = None

    def _start(self, observation: str, gold: frozenset, negatives: frozenset, answer: str, info: dict):
        self.observation, self.gold, self.negatives, self.answer = observation, gold, negatives, answer
        self.t, self.done = 0, False
        return observation, info

    def _parse(self, action: str) -> tuple[frozenset | None, str | None]:
        raise NotImplementedError

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self.done:
            raise RuntimeError("step() after the episode ended; call reset()")
        self.t += 1
        predicted, error = self._parse(action)
        if error is not None:
            truncated = self.t >= self.max_steps
            self.done = truncated
            return f"Error: {error}", 0.0, False, truncated, {"malformed": True}
        self.done = True
        judgement = Judgement(
            self.observation, action, predicted, self.gold, self.negatives, sentence=self.sentence
        )
        reward = float(self.reward_fn(judgement))
        info = {
            "success": predicted == self.gold,
            "f1": judgement.f1,
            "hallucinated": len(judgement.hallucinated),
            "negatives": len(self.negatives),
        }
        return ("correct" if info["success"] else "wrong"), reward, True, False, info

    def scripted_policy(self, compact: bool = True):
        """The gold answer of the current episode, as a Policy (messages -> assistant text). The answer is
        one plain-text turn either way; `compact` is accepted so the tool-env SFT presets apply unchanged."""
        answer = self.answer
        return lambda messages: answer


class GroundingEnv(_OneTurnEnv):
    def __init__(
        self,
        split: str = "train",
        difficulty: str | dict = "medium",
        view: str = "sdp",
        data_path: str = "",
        data_format: str = "",
        parser: str | Callable = "gold",
        reward: str | Callable = "exact",
        reward_kwargs: dict | None = None,
        hallucination_penalty: float = 0.5,
        context_relations: Sequence[str] | None = None,
        max_steps: int = 2,
    ):
        if view not in VIEWS:
            raise ValueError(f"view={view!r}: expected one of {', '.join(VIEWS)}")
        source = RelationSource(split, difficulty, data_path, data_format, parser)
        if source.sentences is not None and parser == "gold" and view != "sentence":
            treeless = [s.id for s in source.sentences if not s.has_tree]
            if treeless:
                raise ValueError(
                    f"{data_path}: {len(treeless)} sentence(s) have no dependency tree (e.g. {treeless[0]!r}); "
                    "use parser='spacy' or view='sentence'"
                )
        super().__init__(source, reward, reward_kwargs, hallucination_penalty, max_steps)
        self.view, self.context_relations = view, context_relations
        self.system_prompt = (
            "Relation extraction: give the relation of subject S to object O. "
            f"Answer with one label: {', '.join(self.schema.labels)}."
        )
        self.pair = None

    def reset(self, seed: int) -> tuple[str, dict]:
        sentence = self.source.sentence(seed, needs_tree=self.view != "sentence")
        return self.reset_to(sentence, random.Random(f"pair/{seed}").choice(sentence.pairs))

    def reset_to(self, sentence: Sentence, pair) -> tuple[str, dict]:
        """An episode on this pair of this sentence (an evaluation that covers every candidate pair)."""
        types = {e.id: e.type for e in sentence.entities}
        head = (
            f"Pair: S = {sentence.mention(pair.subj)} ({types[pair.subj] or '?'}), "
            f"O = {sentence.mention(pair.obj)} ({types[pair.obj] or '?'})"
        )
        info = {"sentence_id": sentence.id, "gold": pair.label, "tag": pair.tag}
        if self.view == "sentence":
            observation = f"{head}\nSentence: {render(sentence, {pair.subj: 'S', pair.obj: 'O'})}"
        else:
            grounding = ground(sentence, pair.subj, pair.obj, self.context_relations)
            lines = [head]
            if self.view in ("sdp", "context"):
                lines.append(f"Context: {grounding.context}")
            if self.view in ("sdp", "path"):
                lines.append(f"Path: {grounding.path_text}")
            observation = "\n".join(lines)
            info["sdp_length"] = grounding.sdp_length
        self.pair, self.sentence = pair, sentence
        positive = pair.label != self.schema.no_relation
        gold = frozenset({(pair.subj, pair.obj, pair.label)}) if positive else frozenset()
        negatives = frozenset() if positive else frozenset({(pair.subj, pair.obj)})
        return self._start(observation, gold, negatives, pair.label, info)

    def _parse(self, action: str):
        label, error = parse_label(action, self.schema.labels)
        if error is not None:
            return None, error
        if label == self.schema.no_relation:
            return frozenset(), None
        return frozenset({(self.pair.subj, self.pair.obj, label)}), None

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        observation, reward, terminated, truncated, info = super().step(action)
        if terminated:
            info.update(
                label=parse_label(action, self.schema.labels)[0], gold=self.pair.label, tag=self.pair.tag
            )
        return observation, reward, terminated, truncated, info


DEFAULT_NOISE = {"omit": 0.2, "conflict": 0.15, "duplicate": 0.15, "hallucinate": 0.15, "type_violation": 0.3}


def noise_rates(rates: dict | None = None) -> dict:
    """DEFAULT_NOISE with `rates` in place (an unknown name is an error)."""
    unknown = set(rates or {}) - set(DEFAULT_NOISE)
    if unknown:
        raise ValueError(f"unknown noise rate(s) {sorted(unknown)}; known: {sorted(DEFAULT_NOISE)}")
    return {**DEFAULT_NOISE, **(rates or {})}


def noisy_predictions(
    sentence: Sentence, schema: Schema, rng: random.Random, rates: dict | None = None
) -> tuple[list[Triple], list[str]]:
    """Local predictions with the errors refinement is for: one line per candidate pair (NO-RELATION
    included), some positives omitted, conflicting or duplicated, some negatives hallucinated, and a
    label that breaks the schema's type constraint. Returns the lines (shuffled) and the error kinds made."""
    rates = noise_rates(rates)
    types = {e.id: e.type for e in sentence.entities}
    lines, errors = [], []
    for pair in sentence.pairs:
        fitting = [r for r in schema.names if schema.allows(r, types[pair.subj], types[pair.obj])]
        if pair.label != schema.no_relation:
            if rng.random() < rates["omit"]:
                lines.append((pair.subj, pair.obj, schema.no_relation))
                errors.append("omission")
                continue
            lines.append((pair.subj, pair.obj, pair.label))
            others = [r for r in fitting if r != pair.label]
            if others and rng.random() < rates["conflict"]:
                lines.append((pair.subj, pair.obj, rng.choice(others)))
                errors.append("conflict")
            if rng.random() < rates["duplicate"]:
                lines.append((pair.subj, pair.obj, pair.label))
                errors.append("duplicate")
        elif fitting and rng.random() < rates["hallucinate"]:
            lines.append((pair.subj, pair.obj, rng.choice(fitting)))
            errors.append("hallucination")
        else:
            lines.append((pair.subj, pair.obj, schema.no_relation))
    if sentence.pairs and rng.random() < rates["type_violation"]:
        pair = rng.choice(sentence.pairs)
        misfits = [r for r in schema.names if not schema.allows(r, types[pair.subj], types[pair.obj])]
        if misfits:
            lines.append((pair.subj, pair.obj, rng.choice(misfits)))
            errors.append("type_violation")
    rng.shuffle(lines)
    return lines, errors


def rule_refine(sentence: Sentence, predictions: Sequence[Triple], schema: Schema) -> frozenset:
    """A rule baseline that sees only the predictions: drop NO-RELATION, duplicates and labels that break the
    type constraints, keep the first label of a conflicting pair. It cannot restore an omission."""
    types = {e.id: e.type for e in sentence.entities}
    kept: dict[tuple[str, str], str] = {}
    for subj, obj, label in predictions:
        if label == schema.no_relation or (subj, obj) in kept:
            continue
        if schema.allows(label, types.get(subj, ""), types.get(obj, "")):
            kept[(subj, obj)] = label
    return frozenset((s, o, label) for (s, o), label in kept.items())


def format_triples(triples) -> str:
    return "\n".join(f"{s} {o} {label}" for s, o, label in triples) or "none"


def format_edits(local: Sequence[Triple], revised, no_relation: str) -> str:
    """`revised` as edits of the local predictions: keep, then the removals and the additions."""
    kept = {t for t in local if t[2] != no_relation}
    removed, added = sorted(kept - set(revised)), sorted(set(revised) - kept)
    return "\n".join(
        ["keep"]
        + [f"- {s} {o} {label}" for s, o, label in removed]
        + [f"+ {s} {o} {label}" for s, o, label in added]
    )


def read_recorded_predictions(path: str) -> tuple[tuple[int, tuple[Triple, ...]], ...]:
    """(generator seed, local predictions) per line of a JSONL file of {"seed", "predictions"} records, as
    alejax.jobs.depth writes for the grounding policy's own labels of training sentences. Read once per file
    version: an env pool builds one env an episode, and each would otherwise parse the whole file."""
    return _read_recorded(os.path.abspath(path), os.stat(path).st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read_recorded(path: str, mtime_ns: int) -> tuple:
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                records.append((int(record["seed"]), tuple(tuple(t) for t in record["predictions"])))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{number}: not a {{seed, predictions}} record ({e})") from e
    if not records:
        raise ValueError(f"{path}: no recorded predictions")
    return tuple(records)


ANSWER_FORMS = ("edits", "set")


class RefinementEnv(_OneTurnEnv):
    """`answers`: the form of the expert's answer ("edits" of the local predictions, or the whole "set");
    both are accepted from a policy. Local predictions come from `predictor` (a callable; evaluation), else
    from `predictions_path` (recorded predictions, e.g. a grounding policy's, on a share `recorded_fraction`
    of the episodes: episode `seed` takes record `seed % n`), else from the seeded noisy predictor."""

    def __init__(
        self,
        split: str = "train",
        difficulty: str | dict = "medium",
        data_path: str = "",
        data_format: str = "",
        reward: str | Callable = "f1",
        reward_kwargs: dict | None = None,
        hallucination_penalty: float = 0.5,
        noise: dict | None = None,
        predictor: LocalPredictor | None = None,
        predictions_path: str = "",
        recorded_fraction: float = 1.0,
        answers: str = "edits",
        max_steps: int = 2,
    ):
        if answers not in ANSWER_FORMS:
            raise ValueError(f"answers={answers!r}: expected one of {', '.join(ANSWER_FORMS)}")
        if not 0.0 <= recorded_fraction <= 1.0:
            raise ValueError(f"recorded_fraction={recorded_fraction} is not in [0, 1]")
        source = RelationSource(split, difficulty, data_path, data_format)
        super().__init__(source, reward, reward_kwargs, hallucination_penalty, max_steps)
        self.noise = noise_rates(noise)
        self.predictor, self.answers = predictor, answers
        self.recorded = read_recorded_predictions(predictions_path) if predictions_path else []
        self.recorded_fraction = recorded_fraction
        self.system_prompt = (
            "Relation extraction, refinement: revise the local predictions with the whole sentence in view. "
            'Write "keep", then "- SUBJ OBJ LABEL" lines to remove and "+ SUBJ OBJ LABEL" lines to add; or write '
            'the revised set, one "SUBJ OBJ LABEL" line per related pair, or none. '
            f"Labels: {', '.join(self.schema.names)}."
        )
        self.predictions: list[Triple] = []

    def _local_predictions(self, seed: int) -> tuple[Sentence, list[Triple], list[str]]:
        if self.predictor is not None:
            sentence = self.source.sentence(seed)
            return sentence, list(self.predictor(sentence)), []
        if self.recorded and random.Random(f"recorded/{seed}").random() < self.recorded_fraction:
            recorded_seed, predictions = self.recorded[seed % len(self.recorded)]
            return self.source.sentence(recorded_seed), list(predictions), ["recorded"]
        sentence = self.source.sentence(seed)
        predictions, errors = noisy_predictions(
            sentence, self.schema, random.Random(f"noise/{seed}"), self.noise
        )
        return sentence, predictions, errors

    def reset(self, seed: int) -> tuple[str, dict]:
        sentence, predictions, errors = self._local_predictions(seed)
        self.sentence, self.predictions = sentence, predictions
        marks = {e.id: e.id for e in sentence.entities}
        entities = ", ".join(f"{e.id} {e.type or '?'}" for e in sentence.entities)
        observation = (
            f"Sentence: {render(sentence, marks)}\nEntities: {entities}\n"
            f"Local predictions:\n{format_triples(predictions)}"
        )
        gold = frozenset(
            (p.subj, p.obj, p.label) for p in sentence.pairs if p.label != self.schema.no_relation
        )
        negatives = frozenset((p.subj, p.obj) for p in sentence.pairs if p.label == self.schema.no_relation)
        order = {(p.subj, p.obj): i for i, p in enumerate(sentence.pairs)}
        ordered = sorted(gold, key=lambda t: order[t[:2]])
        if self.answers == "edits":
            answer = format_edits(predictions, ordered, self.schema.no_relation)
        else:
            answer = format_triples(ordered)
        info = {"sentence_id": sentence.id, "errors": errors, "n_pairs": len(sentence.pairs)}
        return self._start(observation, gold, negatives, answer, info)

    def _parse(self, action: str):
        ids = [e.id for e in self.sentence.entities]
        return parse_triples(action, ids, self.schema.labels, self.schema.no_relation, self.predictions)
