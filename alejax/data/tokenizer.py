"""One tokenizer interface for alejax: HF `tokenizers` + a jinja2 chat template.

The same `Tokenizer` class serves tokenizers trained here (`train_bpe`) and HF
tokenizer directories (`Tokenizer.from_dir`, e.g. a Qwen2.5 checkpoint), so the
rest of the library never touches `tokenizers` or `transformers` directly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import tokenizers
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import decoders, models, pre_tokenizers, trainers

__all__ = [
    "SPECIAL_TOKENS",
    "DEFAULT_CHAT_TEMPLATE",
    "Tokenizer",
    "load_or_train_tokenizer",
    "train_bpe",
    "render_chat_template",
]

# Order matters: `train_bpe` assigns ids 0..len-1 in this order, so these ids are stable.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|pad|>",
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)

# ChatML, Qwen2.5/Hermes tool-calling flavour, minus Qwen's injected default system prompt.
DEFAULT_CHAT_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages and messages[0].role == 'system' %}\n"
    "        {{- messages[0].content + '\\n\\n' }}\n"
    "    {%- endif %}\n"
    '    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n'
    'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}\n'
    "    {%- for tool in tools %}\n"
    "        {{- '\\n' + (tool | tojson) }}\n"
    "    {%- endfor %}\n"
    '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments '
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
    '{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}\n'
    "{%- elif messages and messages[0].role == 'system' %}\n"
    "    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if message.role == 'tool' %}\n"
    "        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}\n"
    "        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message.role == 'assistant' and message.tool_calls %}\n"
    "        {{- '<|im_start|>assistant' }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    '            {{- \'\\n<tool_call>\\n{"name": "\' + tool_call.name + \'", "arguments": \' }}\n'
    "            {%- if tool_call.arguments is string %}\n"
    "                {{- tool_call.arguments }}\n"
    "            {%- else %}\n"
    "                {{- tool_call.arguments | tojson }}\n"
    "            {%- endif %}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif not (loop.first and message.role == 'system') %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + (message.content or '') + '<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)


# ---------------------------------------------------------------------------
# Chat template rendering (mirrors transformers' jinja environment so HF
# templates render byte-identically).
# ---------------------------------------------------------------------------


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # jinja's builtin tojson sorts keys and HTML-escapes; HF templates expect plain json.dumps.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


_TEMPLATE_CACHE: dict[str, jinja2.Template] = {}


def _compile_template(template: str) -> jinja2.Template:
    """Compile (cached) in a sandbox: chat templates from checkpoints are untrusted code."""
    compiled = _TEMPLATE_CACHE.get(template)
    if compiled is None:
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        compiled = _TEMPLATE_CACHE[template] = env.from_string(template)
    return compiled


def render_chat_template(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool = False,
    tools: Sequence[Mapping[str, Any]] | None = None,
    **kwargs: Any,
) -> str:
    """Render `messages` with a jinja2 chat `template` the way transformers does."""
    # Like transformers 5: drop None-valued keys (OpenAI-style `content=None`), which templates
    # handle as "missing" but would otherwise render as the literal string "None".
    messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
    return _compile_template(template).render(
        messages=messages,
        tools=list(tools) if tools is not None else None,
        add_generation_prompt=add_generation_prompt,
        **kwargs,
    )


# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------


def _token_content(value: Any) -> str | None:
    """HF configs store special tokens as plain strings or AddedToken dicts."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return value.get("content")
    return str(value)


class Tokenizer:
    """A `tokenizers.Tokenizer` plus chat template and special-token bookkeeping."""

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        chat_template: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        bos_token: str | None = None,
    ) -> None:
        self.backend = backend
        self.chat_template = chat_template if chat_template is not None else DEFAULT_CHAT_TEMPLATE
        vocab = backend.get_vocab(with_added_tokens=True)

        def first_present(*candidates: str | None) -> str | None:
            return next((c for c in candidates if c is not None and c in vocab), None)

        # ChatML models end a turn (and generation) with <|im_end|>; fall back for plain LMs.
        eos = eos_token if eos_token is not None else first_present("<|im_end|>", "<|endoftext|>")
        pad = pad_token if pad_token is not None else first_present("<|pad|>", "<|endoftext|>", eos)
        for role, tok in (("eos", eos), ("pad", pad), ("bos", bos_token)):
            if role != "bos" and tok is None:
                raise ValueError(f"could not determine a {role} token; pass {role}_token explicitly")
            if tok is not None and tok not in vocab:
                raise ValueError(f"{role} token {tok!r} is not in the vocabulary")
        self.eos_token: str = eos  # type: ignore[assignment]
        self.pad_token: str = pad  # type: ignore[assignment]
        self.bos_token: str | None = bos_token

    # -- construction -------------------------------------------------------

    @classmethod
    def from_dir(cls, directory: str | Path) -> "Tokenizer":
        """Load a HF tokenizer directory (tokenizer.json [+ tokenizer_config.json, chat_template.jinja])."""
        directory = Path(directory)
        tok_file = directory / "tokenizer.json"
        if not tok_file.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {directory} (looked for {tok_file})")
        backend = tokenizers.Tokenizer.from_file(str(tok_file))

        config: dict[str, Any] = {}
        cfg_file = directory / "tokenizer_config.json"
        if cfg_file.is_file():
            config = json.loads(cfg_file.read_text(encoding="utf-8"))

        # Newer transformers save the template as chat_template.jinja, which takes priority.
        jinja_file = directory / "chat_template.jinja"
        template: Any = (
            jinja_file.read_text(encoding="utf-8") if jinja_file.is_file() else config.get("chat_template")
        )
        if isinstance(template, list):  # HF's multi-template form: [{"name": ..., "template": ...}]
            named = {t["name"]: t["template"] for t in template}
            template = named.get("default")
        return cls(
            backend,
            chat_template=template or None,
            eos_token=_token_content(config.get("eos_token")),
            pad_token=_token_content(config.get("pad_token")),
            bos_token=_token_content(config.get("bos_token")),
        )

    @classmethod
    def from_gguf(cls, source: Any) -> "Tokenizer":
        """The tokenizer and chat template a GGUF file carries in its metadata (`tokenizer.ggml.*`,
        `tokenizer.chat_template`); `source` is a path or an open `gguf.GGUFReader`. Byte-level BPE
        vocabularies only (`tokenizer.ggml.model == "gpt2"`: GPT-2, SmolLM, Qwen2, Llama-3)."""
        from alejax.models.gguf import open_gguf, read_field  # gguf is optional: imported on use

        reader = open_gguf(source)
        kind = read_field(reader, "tokenizer.ggml.model")
        if kind != "gpt2":
            raise ValueError(
                f"tokenizer.ggml.model={kind!r}: only byte-level BPE ('gpt2') GGUF tokenizers load"
            )
        tokens = read_field(reader, "tokenizer.ggml.tokens")
        backend = gguf_byte_level_bpe(
            tokens,
            read_field(reader, "tokenizer.ggml.merges", []),
            read_field(reader, "tokenizer.ggml.token_type", []),
            read_field(reader, "tokenizer.ggml.pre", "gpt2"),
        )

        def token(role: str) -> str | None:
            index = read_field(reader, f"tokenizer.ggml.{role}_token_id")
            return None if index is None else tokens[index]

        return cls(
            backend,
            chat_template=read_field(reader, "tokenizer.chat_template"),
            eos_token=token("eos"),
            pad_token=token("padding"),
            bos_token=token("bos"),
        )

    def save(self, directory: str | Path) -> None:
        """Write `tokenizer.json` and a HF-style `tokenizer_config.json` into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(directory / "tokenizer.json"))
        added = {
            str(i): {
                "content": t.content,
                "lstrip": t.lstrip,
                "normalized": t.normalized,
                "rstrip": t.rstrip,
                "single_word": t.single_word,
                "special": t.special,
            }
            for i, t in sorted(self.backend.get_added_tokens_decoder().items())
        }
        config = {
            "added_tokens_decoder": added,
            "bos_token": self.bos_token,
            "chat_template": self.chat_template,
            "clean_up_tokenization_spaces": False,
            "eos_token": self.eos_token,
            "errors": "replace",
            "pad_token": self.pad_token,
            "split_special_tokens": False,
            "tokenizer_class": "PreTrainedTokenizerFast",
        }
        (directory / "tokenizer_config.json").write_text(
            json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )

    # -- encoding -----------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids for `text`; no BOS/EOS added, special-token strings map to their ids."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` over many texts (parallel in the Rust backend)."""
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text for `ids` (any int iterable, e.g. a numpy/jax array)."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_id(self, token: str) -> int:
        """Id of a single token string; KeyError naming it if absent."""
        idx = self.backend.token_to_id(token)
        if idx is None:
            raise KeyError(f"token {token!r} is not in the tokenizer vocabulary")
        return idx

    # -- properties ---------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of ids, including added/special tokens."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def eos_id(self) -> int:
        return self.token_id(self.eos_token)

    @property
    def pad_id(self) -> int:
        return self.token_id(self.pad_token)

    @property
    def bos_id(self) -> int | None:
        return None if self.bos_token is None else self.token_id(self.bos_token)

    @property
    def special_ids(self) -> dict[str, int]:
        """Project special tokens present in the vocab plus any added token flagged special."""
        out = {t.content: i for i, t in self.backend.get_added_tokens_decoder().items() if t.special}
        for tok in SPECIAL_TOKENS:
            idx = self.backend.token_to_id(tok)
            if idx is not None:
                out[tok] = idx
        return dict(sorted(out.items(), key=lambda kv: kv[1]))

    # -- chat ---------------------------------------------------------------

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> str:
        """Render a conversation to text; extra kwargs (e.g. enable_thinking) reach the template."""
        # transformers exposes the special-token strings to templates (e.g. {{ eos_token }}).
        specials = {
            k: v
            for k, v in (
                ("eos_token", self.eos_token),
                ("pad_token", self.pad_token),
                ("bos_token", self.bos_token),
            )
            if v is not None
        }
        return render_chat_template(
            self.chat_template,
            messages,
            add_generation_prompt=add_generation_prompt,
            tools=tools,
            **{**specials, **kwargs},
        )

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, eos={self.eos_token!r}, pad={self.pad_token!r})"


# ---------------------------------------------------------------------------
# GGUF vocabularies (llama.cpp's metadata arrays -> a `tokenizers` BPE)
# ---------------------------------------------------------------------------

# The split before the merges must be the one the merges were learned under; `tokenizer.ggml.pre` names it.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _split_then_bytes(pattern: str) -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(tokenizers.Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _gpt2_split() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's own regex


def _digits_then_gpt2_split() -> pre_tokenizers.PreTokenizer:
    # StarCoder-family vocabularies (SmolLM) isolate every digit first, as llama.cpp does for them.
    # transformers' GGUF loader omits this step; these vocabularies hold no token with a digit in a
    # longer string, so the ids agree either way.
    return pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )


_GGUF_PRE_TOKENIZERS: dict[str, Callable[[], pre_tokenizers.PreTokenizer]] = {
    "gpt2": _gpt2_split,
    "gpt-2": _gpt2_split,
    "smollm": _digits_then_gpt2_split,
    "starcoder": _digits_then_gpt2_split,
    "qwen2": lambda: _split_then_bytes(_QWEN2_SPLIT),
    "deepseek-r1-qwen": lambda: _split_then_bytes(_QWEN2_SPLIT),
    "llama3": lambda: _split_then_bytes(_LLAMA3_SPLIT),
    "llama-v3": lambda: _split_then_bytes(_LLAMA3_SPLIT),
    "llama-bpe": lambda: _split_then_bytes(_LLAMA3_SPLIT),
    "smaug-bpe": lambda: _split_then_bytes(_LLAMA3_SPLIT),
}
_GGUF_CONTROL, _GGUF_USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values (llama.cpp's enum)


def _byte_spelling() -> list[str]:
    """GPT-2's map from each byte to the printable character byte-level vocabularies spell it with."""
    kept = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    shifted = iter(range(256, 512))
    return [chr(b) if b in kept else chr(next(shifted)) for b in range(256)]


def gguf_byte_level_bpe(
    tokens: Sequence[str], merges: Sequence[str], token_types: Sequence[int], pre: str
) -> tokenizers.Tokenizer:
    """A byte-level BPE from a GGUF file's arrays (`tokenizer.ggml.tokens`, `.merges`, `.token_type`,
    `.pre`), built as transformers' GGUF loader builds it, so ids are equal."""
    if pre not in _GGUF_PRE_TOKENIZERS:
        raise ValueError(
            f"tokenizer.ggml.pre={pre!r} is not supported; known: {sorted(_GGUF_PRE_TOKENIZERS)}"
        )
    spelling = _byte_spelling()
    alphabet = set(spelling)

    def in_alphabet(token: str) -> bool:
        return set(token) <= alphabet

    # llama.cpp writes a few tokens in plain characters: spell those byte by byte, as the merges do.
    vocab = {
        token if in_alphabet(token) else "".join(spelling[b] for b in token.encode("utf-8")): index
        for index, token in enumerate(tokens)
    }
    backend = tokenizers.Tokenizer(
        models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges], fuse_unk=False)
    )
    backend.pre_tokenizer = _GGUF_PRE_TOKENIZERS[pre]()
    backend.decoder = decoders.ByteLevel()
    # Control tokens (<|im_end|>) are matched whole and special, user-defined ones (<think>) whole but not
    # special. A control token spelled outside the byte alphabet is a llama.cpp mislabel: adding it would
    # grow the vocabulary past the model's embedding, so it is left out.
    typed = list(zip(tokens, token_types))
    backend.add_special_tokens(
        [
            tokenizers.AddedToken(t, normalized=False, special=True)
            for t, kind in typed
            if kind == _GGUF_CONTROL and in_alphabet(t)
        ]
    )
    backend.add_tokens(
        [
            tokenizers.AddedToken(t, normalized=False, special=False)
            for t, kind in typed
            if kind == _GGUF_USER_DEFINED and in_alphabet(t)
        ]
    )
    return backend


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    special_tokens: Sequence[str] = SPECIAL_TOKENS,
    min_frequency: int = 2,
) -> Tokenizer:
    """Train a byte-level BPE (GPT-2/Qwen style) whose decode(encode(s)) == s for any Unicode."""
    special_tokens = list(special_tokens)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    floor = len(special_tokens) + len(alphabet)
    if vocab_size < floor:
        raise ValueError(f"vocab_size={vocab_size} < {floor} (special tokens + 256 byte symbols)")
    backend = tokenizers.Tokenizer(models.BPE())
    # No normalizer: any normalization would break exact round-trips.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special_tokens,  # added first -> ids 0..n-1
        initial_alphabet=alphabet,  # all 256 bytes, so unseen characters still encode
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(backend)


def load_or_train_tokenizer(
    tokenizer_dir: str, workdir: str | None, train: Callable[[], "Tokenizer"]
) -> "Tokenizer":
    """The tokenizer every job builds from its config: the user's `tokenizer.dir`, else the one an earlier run
    saved in `workdir/tokenizer` (a resumed run keeps its ids), else `train()`, saved there."""
    if tokenizer_dir:
        return Tokenizer.from_dir(tokenizer_dir)
    saved = os.path.join(workdir, "tokenizer") if workdir else None
    if saved and os.path.exists(os.path.join(saved, "tokenizer.json")):
        return Tokenizer.from_dir(saved)
    tokenizer = train()
    if saved:
        tokenizer.save(saved)
    return tokenizer
