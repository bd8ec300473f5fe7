"""seqio Tasks of ShopSimulator (alejax.integrations.seqio_shop). The first two tests always run; the rest need the
optional extra (pip install -r requirements-seqio.txt) and are skipped without it."""

import json
import subprocess
import sys

import numpy as np
import pytest


def _run_python(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_core_import_path_does_not_import_tensorflow():
    loaded = _run_python(
        "import json, sys\n"
        "import alejax, alejax.data.tokenizer, alejax.data.batches, alejax.data.episodes, alejax.envs.shop\n"
        "import alejax.integrations.seqio_shop as st\n"
        "cfg = st.get_config('tiny')\n"
        "print(json.dumps(sorted(m for m in ('tensorflow', 'seqio', 'tensorflow_text') if m in sys.modules)))"
    )
    assert loaded == []


def test_registration_without_the_extra_names_it():
    result = _run_python(
        "import json, sys\n"
        "sys.modules['tensorflow'] = None  # as if the extra were not installed\n"
        "import alejax.integrations.seqio_shop as st\n"
        "try:\n"
        "    st.register_shop_tasks()\n"
        "    print(json.dumps('no error'))\n"
        "except ImportError as e:\n"
        "    print(json.dumps(str(e)))"
    )
    assert "seqio extra" in result and "pip install -r requirements-seqio.txt" in result


# -- with the extra -----------------------------------------------------------------------------------------
ENV_KWARGS = {"world_seed": 0, "n_products": 500, "page_size": 5}
SCENARIOS = ("single", "multi")


@pytest.fixture(scope="module")
def registered():
    pytest.importorskip("seqio")
    from alejax.integrations import seqio_shop as st

    config = st.get_config("tiny")
    config.prefix = "test_alejax_shop"
    config.scenarios = SCENARIOS
    config.tokenizer_episodes, config.n_train, config.n_validation, config.n_eval = 8, 4, 2, 2
    names = st.register_shop_tasks(config, overwrite=True)
    return config, names


def _task(name):
    import seqio

    return seqio.get_mixture_or_task(name)


def _examples(task, split):
    return list(task.get_dataset(None, split=split, shuffle=False).as_numpy_iterator())


def _expert_chats(scenario, split, seeds):
    """The same episodes, made independently by alejax.train.sft (what the SFT job trains on)."""
    from alejax.data.episodes import expert_episodes

    return expert_episodes(
        f"shop/{scenario}",
        seeds,
        env_kwargs={**ENV_KWARGS, "split": split},
        policy_kwargs={"check_details": False},
    )


def test_registers_tasks_and_mixture(registered):
    import seqio

    config, names = registered
    assert names["sft"] == [f"test_alejax_shop_{s}_sft" for s in SCENARIOS]
    assert names["eval"] == [f"test_alejax_shop_{s}_eval" for s in SCENARIOS]
    mixture = seqio.get_mixture_or_task(names["mixture"][0])
    assert sorted(t.name for t in mixture.tasks) == sorted(names["sft"])
    assert _task(names["sft"][0]).splits == ("train", "validation")
    from alejax.integrations import seqio_shop as st

    with pytest.raises(ValueError, match="already registered"):
        st.register_shop_tasks(
            config, tokenizer=_task(names["sft"][0]).output_features["targets"].vocabulary.tokenizer
        )


def test_vocabulary_round_trips_in_python_and_tf(registered):
    import tensorflow as tf

    _, names = registered
    vocab = _task(names["sft"][0]).output_features["targets"].vocabulary
    tok = vocab.tokenizer
    assert (vocab.eos_id, vocab.pad_id, vocab.vocab_size, vocab.unk_id) == (
        tok.eos_id,
        tok.pad_id,
        tok.vocab_size,
        None,
    )
    texts = [
        "search[香氛洗发水 旗舰款 木质香]",
        "click[buy now]",
        "ask[请问您对品牌有什么要求？] <tool_call>x",
    ]
    for text in texts:
        ids = vocab.encode(text)
        assert ids == tok.encode(text) and vocab.decode(ids) == text
        assert vocab.encode_tf(tf.constant(text)).numpy().tolist() == ids
        assert vocab.decode_tf(tf.constant(ids, tf.int32)).numpy().decode() == text
    ragged = vocab.encode_tf(tf.constant(texts))
    assert [r.tolist() for r in ragged.numpy()] == [vocab.encode(t) for t in texts]
    # seqio's decode is for predictions: it stops at the end-of-turn token and drops padding.
    first, second = vocab.encode(texts[0]), vocab.encode(texts[1])
    row = first + [vocab.eos_id] + second
    assert vocab.decode(row) == texts[0]
    batch = np.zeros((2, len(row) + 3), np.int32)
    batch[0, : len(row)], batch[1, : len(second)] = row, second
    assert [t.decode() for t in vocab.decode_tf(tf.constant(batch)).numpy()] == [texts[0], texts[1]]


def test_sft_task_is_episode_tokens_of_the_expert_chats(registered):
    from alejax.data.episodes import episode_tokens

    _, names = registered
    for scenario, name in zip(SCENARIOS, names["sft"]):
        task = _task(name)
        tok = task.output_features["targets"].vocabulary.tokenizer
        for split, env_split, n in (("train", "train", 4), ("validation", "eval", 2)):
            examples = _examples(task, split)
            chats = _expert_chats(scenario, env_split, range(n))
            assert len(examples) == len(chats) == n
            for example, chat in zip(examples, chats):
                tokens, mask = episode_tokens(tok, chat)
                assert example["targets"].tolist() == tokens
                assert example["loss_mask"].tolist() == mask and 0 < sum(mask) < len(mask)
                rendered = tok.apply_chat_template(chat[:-1])  # through the last assistant turn
                assert tok.decode(example["targets"]) == rendered == example["targets_pretokenized"].decode()
                # the masked tokens are exactly the expert's actions, each with its end-of-turn token
                actions = [m["content"] for m in chat if m["role"] == "assistant"]
                masked = [t for t, m in zip(tokens, mask) if m]
                assert masked == [i for a in actions for i in tok.encode(a) + [tok.eos_id]]


def test_packed_rows_keep_tokens_and_loss_mask(registered):
    from alejax.integrations import seqio_shop as st

    _, names = registered
    examples = [e for name in names["sft"] for e in _examples(_task(name), "train")]
    seq_len = 2048
    assert max(len(e["targets"]) for e in examples) <= seq_len  # nothing trimmed, so all must survive
    pieces, n_rows = [], 0
    for name in names["sft"]:
        rows = st.packed_sft_rows(name, "train", seq_len)
        n_rows += len(rows["tokens"])
        assert set(rows) == {"tokens", "segment_ids", "positions", "loss_mask"}
        assert rows["tokens"].shape[1] == seq_len and rows["loss_mask"].dtype == np.float32
        pieces += _segments(rows)
    expected = [(e["targets"].tolist(), e["loss_mask"].tolist()) for e in examples]
    assert sorted(pieces) == sorted(expected)
    assert n_rows < len(pieces)  # packed: some rows hold several episodes


def _segments(rows):
    pieces = []
    for r in range(len(rows["tokens"])):
        for segment in range(1, rows["segment_ids"][r].max() + 1):
            at = rows["segment_ids"][r] == segment
            assert rows["positions"][r][at].tolist() == list(range(at.sum()))
            pieces.append((rows["tokens"][r][at].tolist(), rows["loss_mask"][r][at].astype(int).tolist()))
    return pieces


def test_eval_task_and_replay_metric(registered):
    from alejax.data.episodes import episode_tokens

    _, names = registered
    task = _task(names["eval"][1])  # multi-turn: the shopper answers ask[...] during the replay
    tok = task.output_features["targets"].vocabulary.tokenizer
    examples = _examples(task, "validation")
    chats = _expert_chats("multi", "eval", range(2))
    assert len(examples) == sum(len([m for m in c if m["role"] == "assistant"]) for c in chats)
    for example in examples:
        tokens, _ = episode_tokens(tok, chats[example["seed"]])
        n = len(example["inputs"]) + len(example["targets"])
        assert example["inputs"].tolist() + example["targets"].tolist() == tokens[:n]  # the rollout layout
        assert example["targets"][-1] == tok.eos_id and json.loads(example["goal"])["asin"]

    metric = task.metric_objs[0]

    def score(predicted_actions):
        width = max(len(tok.encode(a)) for a in predicted_actions) + 1
        out = np.zeros((len(examples), width), np.int32)
        for i, action in enumerate(predicted_actions):
            ids = tok.encode(action) + [tok.eos_id]
            out[i, : len(ids)] = ids
        result, _ = metric.from_model_output(examples, out, task.output_features).actual_compute(
            examples, task.output_features
        )
        return result

    expert = [e["targets_pretokenized"].decode() for e in examples]
    assert score(expert) == {
        "full_success": 100.0,
        "r_strict": 100.0,
        "r_loose": 100.0,
        "step_accuracy": 100.0,
        "episodes": 2.0,
    }
    # the second episode never buys: half the episodes succeed
    last = max(i for i, e in enumerate(examples) if e["seed"] == 1)
    wrong = list(expert)
    wrong[last] = "click[back to search]"
    result = score(wrong)
    assert result["full_success"] == 50.0 and result["r_loose"] == 50.0
    assert result["step_accuracy"] == pytest.approx(100 * (len(examples) - 1) / len(examples))
    with pytest.raises(ValueError, match="lacks the predictions"):
        metric.from_model_output(
            examples[:-1], np.zeros((len(examples) - 1, 2), np.int32), task.output_features
        ).actual_compute(examples[:-1], task.output_features)
