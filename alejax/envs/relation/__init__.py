"""DEPTH in alejax: relation extraction grounded in dependency paths, with refinement (arXiv 2508.14391).

    from alejax.envs import make
    env = make("relation/grounding", split="train", difficulty="medium")
    observation, info = env.reset(seed=3)          # SDP-simplified context + verbalised path of one pair
    observation, reward, terminated, truncated, info = env.step("works_for")

Modules: `schema` (records, relation schema, type constraints), `lexicon` + `generator` (seeded sentences
with gold trees, hard negatives, held-out splits), `formats` (TACRED JSON, SemEval-2010 Task 8, CoNLL-U),
`trees` (validity, projectivity), `sdp` (shortest dependency path, simplification, verbalisation), `parsing`
(gold or spaCy trees, parser agreement), `metrics` (micro-F1, hallucination rate), `rewards`, `envs`.
Docs: docs/depth.md.
"""

from __future__ import annotations

from alejax.envs.base import register
from alejax.envs.relation.envs import GroundingEnv, RefinementEnv
from alejax.envs.relation.generator import generate_corpus, generate_sentence
from alejax.envs.relation.schema import NO_RELATION, SYNTHETIC_SCHEMA, Entity, Pair, Schema, Sentence, Token

register("relation/grounding", GroundingEnv)
register("relation/direct", lambda **kw: GroundingEnv(**{"view": "sentence", **kw}))
register("relation/refinement", RefinementEnv)

__all__ = [
    "NO_RELATION",
    "SYNTHETIC_SCHEMA",
    "Entity",
    "GroundingEnv",
    "Pair",
    "RefinementEnv",
    "Schema",
    "Sentence",
    "Token",
    "generate_corpus",
    "generate_sentence",
]
