"""The reward-hacking study on relation extraction (alejax.envs.relation.hacking): preference pairs, the
answers' gold quality against the env, the RM features, a tiny RM run and the RL loop."""

import dataclasses
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alejax.envs import make
from alejax.envs.relation import hacking as H
from alejax.reward.robustness import train_method

SMALL = H.StudyConfig(n_train=600, n_eval=300, n_rl_prompts=300, n_sft=100, vocabulary=80, rm_eval_every=50)


@pytest.fixture(scope="module")
def vocabulary():
    return H.build_vocabulary(SMALL.vocabulary, n=300)


@pytest.fixture(scope="module")
def seed_data(vocabulary):
    return H.make_seed_data(0, SMALL, vocabulary)


def test_pairs_are_deterministic(vocabulary):
    obs = H.observations("train", 500, 100)
    assert obs == H.observations("train", 500, 100)
    a, b = H.preference_pairs(obs, vocabulary, 0.9, seed=3), H.preference_pairs(obs, vocabulary, 0.9, seed=3)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    c = H.preference_pairs(obs, vocabulary, 0.9, seed=4)
    assert not np.array_equal(a["confident_w"], c["confident_w"])


def test_feature_goes_with_preference_in_train_and_not_at_test(seed_data):
    for split, p in (("train", 0.9), ("val", 0.9), ("test", 0.5), ("reversed", 0.1)):
        pairs = seed_data[split]
        n = len(pairs["label_w"])
        tol = 3.5 * np.sqrt(p * (1 - p) / n)
        # exactly one side is confident and the rationales differ, so "the preferred side has it" is the rate
        np.testing.assert_array_equal(pairs["confident_w"] + pairs["confident_l"], 1)
        assert np.all(pairs["length_w"] != pairs["length_l"])
        assert abs(pairs["confident_w"].mean() - p) < tol, split
        assert abs((pairs["length_w"] > pairs["length_l"]).mean() - p) < tol, split
        # the chosen side is always strictly better by the gold rule; wording never enters it
        assert np.all(pairs["quality_w"] > pairs["quality_l"])
    # the two features are drawn independently of each other
    train = seed_data["train"]
    both = np.mean(train["confident_w"] & (train["length_w"] > train["length_l"]))
    assert abs(both - 0.81) < 0.06


def test_gold_quality_is_the_env_reward_and_wording_does_not_change_it():
    env = make("relation/grounding", split="train", difficulty="medium")
    seen = set()
    for seed in range(25):
        _, info = env.reset(seed=seed)
        seen.add(info["gold"] == H.NO_RELATION)
        for label in H.LABELS:
            for answer in (
                H.Answer(label),
                H.Answer(label, True, H.MAX_RATIONALE),
                H.Answer(label, False, 2),
            ):
                env.reset(seed=seed)
                _, reward, terminated, _, step_info = env.step(H.render_answer(answer))
                assert terminated and step_info["label"] == label
                assert reward == H.gold_quality(info["gold"], label)
    assert seen == {True, False}
    # a hallucinated relation is worse than a missed one
    assert H.gold_quality(H.NO_RELATION, "works_for") < H.gold_quality("works_for", H.NO_RELATION)


def test_observation_tokens_drop_the_mentions_and_keep_types_and_arrows():
    observation = (
        "Pair: S = Tessera Labs (ORG), O = Lorne (CITY)\n"
        "Context: [S Tessera Labs] is based in [O Lorne]\n"
        "Path: Tessera <-nsubj:pass- based -obl-> Lorne"
    )
    tokens = H.observation_tokens(observation)
    assert {"s:ORG", "o:CITY", "<nsubj:pass", "obl>", "based", "in"} <= set(tokens)
    assert not {"tessera", "labs", "lorne", "s", "o"} & set(tokens)


def test_answer_features_put_the_wording_in_the_last_two_columns(vocabulary):
    bow = np.zeros((2, len(vocabulary)), np.float32)
    bow[:, 3] = 1.0
    f = np.asarray(H.answer_features(bow, np.array([2, 2]), np.array([0, 1]), np.array([0, 3])))
    assert f.shape == (2, H.feature_dim(len(vocabulary)))
    np.testing.assert_array_equal(f[0, :-2], f[1, :-2])  # same label and observation
    np.testing.assert_allclose(f[:, -2:], [[0.0, 0.0], [1.0, 0.5]])
    assert f[0, 3 * len(H.LABELS) + 2] == 1.0  # bag-of-words word 3 crossed with label 2


def _train_bt(seed_data, p_feature, vocabulary):
    """BT on pairs whose feature rate is p_feature (train + val), 300 steps; (rm_metrics, graphdef, params)."""
    obs = H.observations("train", 2_000_000, 900)
    pairs = {
        "train": H.preference_pairs(obs[:600], vocabulary, p_feature, seed=1),
        "val": H.preference_pairs(obs[600:], vocabulary, p_feature, seed=2),
    }
    data = {f"{split}/{k}": v[None] for split in pairs for k, v in H.pair_features(pairs[split]).items()}
    graphdef, (best, _, _) = train_method("bt", data, np.array([0]), 300, 64, 1e-3, 50)
    params = jax.tree.map(lambda x: x[0], best)
    return H.rm_metrics(graphdef, params, dict(seed_data, val=pairs["val"])), graphdef, params


@pytest.fixture(scope="module")
def bt_models(seed_data, vocabulary):
    return {p: _train_bt(seed_data, p, vocabulary) for p in (0.5, 1.0)}


def test_bt_learns_correctness_without_the_feature_and_reads_it_with(bt_models):
    clean, shortcut = bt_models[0.5][0], bt_models[1.0][0]
    assert clean["acc_test"] > 0.8  # chance is 0.5: the label is learnable from the crossed features
    assert abs(clean["sens_confident"]) < 0.1
    assert shortcut["sens_confident"] > 0.2  # the confident phrase always won in training: BT pays for it
    assert shortcut["sens_confident"] > clean["sens_confident"] + 0.15


def test_parse_answer_reads_label_and_wording():
    for answer in (H.Answer("works_for"), H.Answer("no_relation", True, 4), H.Answer("born_in", True, 6)):
        assert H.parse_answer(H.render_answer(answer)) == answer
    assert H.parse_answer("works_for or founded") is None
    assert H.parse_answer("definitely founded, as the long path says again and again") == H.Answer(
        "founded", True, H.MAX_RATIONALE
    )


def test_the_rm_is_the_grounding_envs_reward_by_name(bt_models, vocabulary):
    _, graphdef, params = bt_models[1.0]
    env = make(
        "relation/grounding",
        reward="relation_rm",
        reward_kwargs=dict(graphdef=graphdef, params=params, vocabulary=vocabulary),
    )
    observation, _ = env.reset(seed=11)
    rewards = {}
    for answer in (H.Answer("works_for"), H.Answer("works_for", True, H.MAX_RATIONALE)):
        env.reset(seed=11)
        rewards[answer.confident] = env.step(H.render_answer(answer))[1]
        features = H.answer_features(
            H.bag_of_words([(observation, "", "")], vocabulary),
            np.array([H.LABELS.index(answer.label)]),
            [answer.confident],
            [answer.rationale_length],
        )
        expected = float(nnx.merge(graphdef, params)(features)["reward"][0])
        assert rewards[answer.confident] == pytest.approx(expected, rel=1e-5)
    assert rewards[True] > rewards[False]  # the shortcut RM pays for the wording through the env too


def test_warm_start_learns_labels_and_leaves_the_wording_uniform(seed_data):
    graphdef, params = H.warm_start(0, SMALL, seed_data)
    m = H.policy_metrics(graphdef, params, seed_data["eval"])
    assert m["f1"] > 0.2
    assert m["confident_rate"] == pytest.approx(0.5) and m["rationale_length"] == pytest.approx(3.0)


def test_rl_moves_the_wording_toward_what_the_reward_pays(seed_data, vocabulary):
    """A reward that pays only for the confident phrase: the loop must raise P(confident) and leave the
    label alone; the gold rule must not move the wording much."""
    config = dataclasses.replace(SMALL, rl_steps=40, rl_eval_every=40, rl_advantage="dr_grpo")

    def pays_confidence(params, prompts, label, confident, length):
        return confident.astype(jnp.float32)

    graphdef, step, tx = H.make_rl_step(pays_confidence, config, len(vocabulary))
    run = H.rl_run(graphdef, step, tx, 0, config, seed_data, None)
    assert run["start"]["confident_rate"] == pytest.approx(0.5)
    assert run["end"]["confident_rate"] > 0.8
    graphdef, step, tx = H.make_rl_step(H.gold_reward, config, len(vocabulary))
    run = H.rl_run(graphdef, step, tx, 0, config, seed_data, None)
    assert abs(run["end"]["confident_rate"] - 0.5) < 0.15
    assert run["end"]["f1"] >= run["start"]["f1"] - 0.05


def test_rm_data_stacks_seeds_in_train_method_layout(seed_data, vocabulary):
    data = H.rm_data([seed_data, seed_data])
    d = H.feature_dim(len(vocabulary))
    assert data["train/h_w"].shape == (2, SMALL.n_train, d)
    assert data["test/attrs_l"].shape == (2, SMALL.n_eval, 2)


# ---- one RM for the DEPTH job: train_relation_rm, its file, the grounding and refinement rewards ---------

# Tiny: the causal RM's compile is most of the ~12 s; 600 pairs already rank gold above wrong on held-out.
JOB_RM = H.StudyConfig(n_train=600, n_eval=200, vocabulary=80, rm_steps=200, rm_eval_every=50)


@pytest.fixture(scope="module")
def relation_rm_file(tmp_path_factory):
    """(path, (graphdef, params, vocabulary)) of one causal RM on the sdp view, saved."""
    rm = H.train_relation_rm(0, view="sdp", config=JOB_RM)
    path = str(tmp_path_factory.mktemp("rm") / "relation_rm.npz")
    H.save_relation_rm(path, *rm, view="sdp")
    return path, rm


def _label_scores(graphdef, params, vocabulary, obs):
    """[n, labels] scores of bare-label answers to each observation."""
    score = H._rm_scorer(graphdef, params)
    bow, n = H.bag_of_words(obs, vocabulary), len(obs)
    zeros = np.zeros(n, np.int32)
    return np.stack([score(bow, np.full(n, k), zeros, zeros) for k in range(len(H.LABELS))], 1)


def test_saved_relation_rm_loads_to_identical_scores(relation_rm_file):
    path, (graphdef, params, vocabulary) = relation_rm_file
    loaded = H.load_relation_rm(path)
    assert loaded[2] == vocabulary
    obs = H.observations("dev", 7_000, 20)
    np.testing.assert_array_equal(
        _label_scores(*loaded, obs), _label_scores(graphdef, params, vocabulary, obs)
    )


def test_relation_rm_from_a_path_prefers_the_gold_label_in_the_grounding_env(relation_rm_file):
    path, _ = relation_rm_file
    env = make("relation/grounding", split="dev", reward="relation_rm", reward_kwargs={"path": path})
    margins = []
    for seed in range(30):
        _, info = env.reset(seed=seed)
        gold = env.step(info["gold"])[1]
        wrong = [label for label in H.LABELS if label != info["gold"]][seed % (len(H.LABELS) - 1)]
        env.reset(seed=seed)
        margins.append(gold - env.step(wrong)[1])
    assert np.mean(margins) > 0 and np.mean(np.array(margins) > 0) > 0.7
    # A pool builds one env an episode: every env of the file shares one loaded, compiled reward.
    again = make("relation/grounding", split="dev", reward="relation_rm", reward_kwargs={"path": path})
    assert again.reward_fn is env.reward_fn
    # a file trained on one view refuses observations of another
    direct = make("relation/direct", reward="relation_rm", reward_kwargs={"path": path})
    direct.reset(seed=0)
    with pytest.raises(ValueError, match="'sdp' view"):
        direct.step("works_for")


def test_a_fresh_process_builds_the_rm_reward_from_the_path_alone(relation_rm_file):
    """An env pool's worker is a fresh interpreter that never imported hacking: the name still resolves."""
    path, _ = relation_rm_file
    code = (
        "import sys; from alejax.envs import make; "
        "env = make('relation/grounding', reward='relation_rm', reward_kwargs={'path': sys.argv[1]}); "
        "env.reset(seed=4); print(env.step('works_for')[1])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, path],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),  # the repo root, where alejax is
    )
    env = make("relation/grounding", reward="relation_rm", reward_kwargs={"path": path})
    env.reset(seed=4)
    assert float(out.stdout.strip().splitlines()[-1]) == pytest.approx(env.step("works_for")[1], rel=1e-5)


def test_relation_rm_set_scores_the_gold_set_above_hallucinations(relation_rm_file):
    from alejax.envs.relation.envs import format_triples

    path, _ = relation_rm_file
    env = make("relation/refinement", split="dev", reward="relation_rm_set", reward_kwargs={"path": path})
    schema, gaps = H.SYNTHETIC_SCHEMA, []
    for seed in range(40):
        env.reset(seed=seed)
        sentence = env.sentence
        types = {e.id: e.type for e in sentence.entities}
        gold = [(p.subj, p.obj, p.label) for p in sentence.pairs if p.label != H.NO_RELATION]
        # a relation the types allow on every NO-RELATION pair that has one
        hallucinated = [
            (p.subj, p.obj, fitting[0])
            for p in sentence.pairs
            if p.label == H.NO_RELATION
            and (fitting := [r for r in schema.names if schema.allows(r, types[p.subj], types[p.obj])])
        ]
        if not hallucinated:
            continue
        rewards = []
        for triples in (gold, gold + hallucinated):
            env.reset(seed=seed)
            rewards.append(env.step(format_triples(triples))[1])
        gaps.append(rewards[0] - rewards[1])
    assert len(gaps) >= 10
    assert np.mean(gaps) > 0 and np.mean(np.array(gaps) > 0) > 0.7


def test_relation_rm_set_scores_one_batch_per_judgement_and_needs_the_sentence(relation_rm_file):
    from alejax.envs.relation.rewards import Judgement

    path, (graphdef, params, vocabulary) = relation_rm_file
    reward = H.relation_rm_set_factory(graphdef=graphdef, params=params, vocabulary=vocabulary)
    env = make("relation/refinement", split="dev")
    env.reset(seed=3)
    sentence = env.sentence
    pair = sentence.pairs[0]
    # by hand: each pair's observation with its label (absent = no_relation), a conflict scored as its worse
    grounding = H.GroundingEnv(view="sdp")
    obs = [grounding.reset_to(sentence, p)[0] for p in sentence.pairs]
    scores = _label_scores(graphdef, params, vocabulary, [(o, "", "") for o in obs])
    none = H.LABELS.index(H.NO_RELATION)
    two = [H.LABELS.index(label) for label in ("works_for", "located_in")]
    expected = scores[:, none].copy()
    expected[0] = scores[0, two].min()
    predicted = frozenset((pair.subj, pair.obj, label) for label in ("works_for", "located_in"))
    judgement = Judgement("", "", predicted, frozenset(), frozenset(), sentence=sentence)
    assert reward(judgement) == pytest.approx(float(expected.mean()), rel=1e-5)
    with pytest.raises(ValueError, match="sentence"):
        reward(dataclasses.replace(judgement, sentence=None))


def test_a_missing_or_broken_relation_rm_file_names_its_path(tmp_path, relation_rm_file):
    missing = str(tmp_path / "absent.npz")
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        H.load_relation_rm(missing)
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        make("relation/refinement", reward="relation_rm_set", reward_kwargs={"path": missing})
    broken = tmp_path / "broken.npz"
    broken.write_bytes(open(relation_rm_file[0], "rb").read()[:500])
    with pytest.raises(ValueError, match="broken.npz"):
        H.load_relation_rm(str(broken))
    with pytest.raises(ValueError, match="trained on 'sdp'"):
        H.relation_rm_set_factory(path=relation_rm_file[0], view="sentence")


def test_a_sentence_view_rm_ranks_gold_above_wrong_on_held_out_observations():
    graphdef, params, vocabulary = H.train_relation_rm(1, view="sentence", method="bt", config=JOB_RM)
    assert not any(t.startswith("<") or t.endswith(">") for t in vocabulary)  # no path arrows: sentence words
    obs = H.observations("dev", 9_000, 200, view="sentence")
    assert all(H.observation_view(o) == "sentence" for o, _, _ in obs)
    scores = _label_scores(graphdef, params, vocabulary, obs)
    rng = np.random.default_rng(0)
    gold = np.array([H.LABELS.index(g) for _, g, _ in obs])
    worse = np.array(
        [
            H.LABELS.index(H._worse_label(g, H._PAIR.search(o.split("\n")[0]).group(2, 4), rng))
            for o, g, _ in obs
        ]
    )
    rows = np.arange(len(obs))
    assert np.mean(scores[rows, gold] > scores[rows, worse]) > 0.7  # chance is 0.5
