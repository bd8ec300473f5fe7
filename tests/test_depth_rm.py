"""The reward-hacking study on relation extraction (alejax.envs.relation.hacking): preference pairs, the
answers' gold quality against the env, the RM features, a tiny RM run and the RL loop."""

import dataclasses

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
