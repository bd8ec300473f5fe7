"""A jit'd sampler on the one model graph: prefill and segmented decode against a preallocated KV cache.

Rows ("slots") are independent: each has its own position, so a batch can hold sequences at different
points (continuous batching). Two compiled programs do all the work:

  prefill(chunk [B, L], start [B], length [B])  writes each row's chunk at its own positions and samples
                                                 the token after it (rows with length 0 are untouched)
  decode(token [B], position [B], budget [B])    runs up to `segment` steps in a `lax.while_loop`, never
                                                 returning to Python per token; a row stops at a stop token
                                                 or when its budget of new tokens is spent

Chunk lengths are padded to power-of-two buckets, so a warmed-up sampler does not recompile. Writes at
positions >= the cache length are dropped, which is how idle rows stay untouched.

Attention reads a length-bucketed view of the cache: positions [0, view) where `view` is the smallest power of
two (at least `min_cache_view`) that holds every position the call writes or reads. A 300-token episode in a
4096-position cache then pays for 512, not 4096; each view length is one more compiled program (at most
log2(max_length / min_cache_view) + 1 of them). Views rather than pages: rows of one call share the view, so a
single long row makes the whole batch pay for its length — see docs/rollout.md for the trade.

Both take one key per row (`rng` of shape [B]): the token a row samples at position p uses fold_in(row_key,
p) alone, so what a sequence samples does not depend on which other rows share its calls or when (the
scheduler's batches follow env timing; per-episode keys make a seed's rollouts repeat).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from alejax.models.transformer import KVCache, Transformer, init_cache, unstack_layers
from alejax.parallel.distributed import to_host
from alejax.parallel.rules import logical_to_spec

LOGPROB_KINDS = ("sampled", "full")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    # The behaviour log-prob μ returned with each token: "sampled" = under the distribution the token was
    # actually drawn from (tempered, top-k / top-p truncated and renormalised); "full" = under the tempered
    # distribution over the whole vocabulary (what the truncation was applied to).
    logprob: str = "sampled"

    def __post_init__(self):
        if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"bad sampling config {self}")
        if self.logprob not in LOGPROB_KINDS:
            raise ValueError(f"sampling.logprob={self.logprob!r}: expected one of {list(LOGPROB_KINDS)}")


def sample_logits(logits: jax.Array, rng: jax.Array, config: SamplingConfig):
    """Next token and its behaviour log-prob μ (`config.logprob`): by default the log-prob under the tempered,
    truncated, renormalised distribution that drew it, so importance ratios π / μ (TIS / MIS, IPA's mismatch
    mask) correct for the truncation too; "full" gives log softmax(logits / T) over the whole vocabulary.
    Greedy (T = 0) returns the untempered full log-prob either way (the draw itself is certain)."""
    logits = logits.astype(jnp.float32)
    if config.temperature == 0:
        token = _first_argmax(logits)
        log_probs = jax.nn.log_softmax(logits, axis=-1)
    else:
        scaled = logits / config.temperature
        log_probs = jax.nn.log_softmax(scaled, axis=-1)
        if config.top_k:
            # Draw among the k best only: a partial top-k is far cheaper than sorting the vocabulary.
            candidates, candidate_ids = jax.lax.top_k(scaled, config.top_k)
        else:
            candidates, candidate_ids = scaled, None
        if config.top_p < 1.0 and not config.top_k:
            candidates = _nucleus_without_sort(candidates, config.top_p)
        elif config.top_p < 1.0:  # top-k candidates come sorted best-first
            cumulative = jnp.cumsum(jax.nn.softmax(candidates, axis=-1), axis=-1)
            # Keep the smallest prefix whose mass reaches top_p (the best token is always kept).
            keep = (cumulative - jax.nn.softmax(candidates, axis=-1)) < config.top_p
            candidates = jnp.where(keep, candidates, -jnp.inf)
        choice = _inverse_cdf_draw(candidates, rng)
        token = (
            choice
            if candidate_ids is None
            else jnp.take_along_axis(candidate_ids, choice[..., None], -1)[..., 0]
        )
        if config.logprob == "sampled" and (config.top_k or config.top_p < 1.0):
            drawn_from = jax.nn.log_softmax(candidates, axis=-1)  # -inf outside the kept set
            return token.astype(jnp.int32), jnp.take_along_axis(drawn_from, choice[..., None], -1)[..., 0]
    logp = jnp.take_along_axis(log_probs, token[..., None], axis=-1)[..., 0]
    return token.astype(jnp.int32), logp


def _first_argmax(logits: jax.Array) -> jax.Array:
    """jnp.argmax over the last axis (the first index of the maximum) as two plain reductions: XLA's CPU
    (value, index) reduce behind argmax took ~3x longer (64 x 49,152 logits: 29 vs 10 ms, 2 shared cores)."""
    best = jnp.max(logits, axis=-1, keepdims=True)
    vocab = logits.shape[-1]
    first = jnp.min(jnp.where(logits == best, jnp.arange(vocab), vocab), axis=-1)
    return jnp.minimum(first, vocab - 1)  # all-NaN rows (no index equals the max): the last token


def _nucleus_without_sort(logits: jax.Array, top_p: float, iterations: int = 30) -> jax.Array:
    """Top-p over the whole vocabulary by bisecting the probability threshold (O(V) per step, where a
    full sort cost 50 ms per decode step for 64 x 4096 on CPU): keeps the tokens with p >= t for the
    largest t whose kept mass still reaches top_p."""
    probs = jax.nn.softmax(logits, axis=-1)

    def bisect(_, bounds):
        low, high = bounds
        mid = 0.5 * (low + high)
        mass = jnp.sum(jnp.where(probs >= mid, probs, 0.0), axis=-1, keepdims=True)
        return jnp.where(mass >= top_p, mid, low), jnp.where(mass >= top_p, high, mid)

    low, _ = jax.lax.fori_loop(
        0, iterations, bisect, (jnp.zeros_like(probs[..., :1]), jnp.max(probs, axis=-1, keepdims=True))
    )
    return jnp.where(probs >= low, logits, -jnp.inf)


def _inverse_cdf_draw(logits: jax.Array, rng: jax.Array) -> jax.Array:
    """One uniform per row against the CDF: on CPU, Gumbel noise for every vocabulary entry cost more than
    the model's own decode step. `rng`: one key per row (shape [B] for logits [B, V])."""
    cdf = jnp.cumsum(jax.nn.softmax(logits, axis=-1), axis=-1)
    u = jax.vmap(lambda key: jax.random.uniform(key, (1,), dtype=cdf.dtype))(rng)
    u = u * cdf[..., -1:]
    return jnp.minimum(jnp.sum(cdf <= u, axis=-1), logits.shape[-1] - 1)


def _at_positions(rng: jax.Array, positions: jax.Array) -> jax.Array:
    """Per-row keys folded with the position of the token each row samples."""
    return jax.vmap(jax.random.fold_in)(rng, positions)


def bucket_length(n: int, minimum: int = 16, maximum: int | None = None) -> int:
    """Smallest power of two >= n (at least `minimum`), capped at `maximum`."""
    size = max(minimum, 1 << max(n - 1, 0).bit_length())
    return size if maximum is None else min(size, maximum)


class Sampler:
    """Holds the compiled prefill/decode programs for one model, batch size and cache length."""

    def __init__(
        self,
        model: Transformer,
        batch_size: int,
        max_length: int,
        sampling: SamplingConfig = SamplingConfig(),
        stop_ids: Sequence[int] = (),
        segment: int = 32,
        mesh: Mesh | None = None,
        cache_dtype=None,
        cache_views: bool = True,
        min_cache_view: int = 256,
        decode_rows: int | None = None,
        unstack: bool | None = None,
    ):
        self.graphdef, self.params = nnx.split(model)
        # Decode runs the layers unrolled from per-layer copies of their weights (`unstack_layers`): under
        # the layer scan XLA's CPU backend copies every layer's weights out of the stacked arrays at every
        # step, ~30% of SmolLM2's decode step on CPU (docs/rollout.md, "SmolLM2"); each layer's cache view
        # gets its own buffers for the call too (below). The price: a second copy of the layers' weights,
        # a transient one of the cache view, and a decode program that compiles each layer. None: on for
        # the CPU backend without a mesh (where it was measured; elsewhere the stacked layout stays).
        self.unstack = (mesh is None and jax.default_backend() == "cpu") if unstack is None else unstack
        self._unstacked: tuple = (None, None)  # (the params they were made from, the per-layer states)
        self.config = model.config
        self.batch_size, self.max_length, self.segment = batch_size, max_length, segment
        # A decode call computes at most `decode_rows` of the cache's `batch_size` rows (gathered by index):
        # the other rows hold the KV of episodes waiting on their envs (the KV pool), so more episodes can
        # be in flight than the decode batch computes. None: every row decodes (no gather).
        self.decode_rows = decode_rows or batch_size
        if not 0 < self.decode_rows <= batch_size:
            raise ValueError(f"decode_rows={decode_rows} must be in [1, batch_size={batch_size}]")
        self.sampling = sampling
        self.stop_ids = jnp.asarray(list(stop_ids) or [-1], jnp.int32)
        self.mesh = mesh
        self.cache_dtype = cache_dtype
        # False: attend over the whole preallocated cache (the baseline the sampler bench compares against).
        self.cache_views, self.min_cache_view = cache_views, min_cache_view
        self._prefill = jax.jit(self._prefill_impl, donate_argnums=(1,), static_argnames=("view",))
        self._decode = jax.jit(self._decode_impl, donate_argnums=(1,), static_argnames=("steps", "view"))
        self._copy_rows = jax.jit(self._copy_rows_impl, donate_argnums=(0,), static_argnames=("view",))
        self.compilations = 0  # counted in the traced bodies: a trace is a compilation

    # -- state --------------------------------------------------------------------------------------
    def init_cache(self) -> KVCache:
        with self._mesh_context():
            return jax.jit(
                functools.partial(init_cache, self.config, self.batch_size, self.max_length, self.cache_dtype)
            )()

    def update_params(self, params) -> None:
        """Weight sync from the trainer: `params` replace the sampler's entries of the same paths (all of
        them, or a part such as LoRA's adapters over a frozen base); resharded to this sampler's layout by jit."""
        self.params = nnx.merge_state(self.params, params)

    def _mesh_context(self):
        return jax.set_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext()

    def cache_view(self, end: int) -> int:
        """The cache length a call attends over when its rows use positions below `end`."""
        if not self.cache_views:
            return self.max_length
        return bucket_length(
            max(end, 1), minimum=min(self.min_cache_view, self.max_length), maximum=self.max_length
        )

    def _row_sharding(self, x):
        if self.mesh is None:
            return x
        spec = logical_to_spec(("batch", "length")[: x.ndim], x.shape, self.mesh)
        return jax.device_put(x, NamedSharding(self.mesh, spec))

    # -- prefill -------------------------------------------------------------------------------------
    def _prefill_impl(self, params, cache, chunk, start, length, rows, rng, view):
        self.compilations += 1
        model = nnx.merge(self.graphdef, params)
        width = chunk.shape[1]
        offsets = jnp.arange(width)[None, :]
        # Padding and idle rows write at an out-of-range position: the cache drops those writes.
        positions = jnp.where(offsets < length[:, None], start[:, None] + offsets, self.max_length)
        hidden, cache = model.hidden_states(
            chunk, positions=positions, cache=cache, attend_length=view, cache_rows=rows
        )
        last = jnp.take_along_axis(hidden, jnp.maximum(length - 1, 0)[:, None, None], axis=1)
        token, logp = sample_logits(
            model.logits(last)[:, 0], _at_positions(rng[rows], start + length), self.sampling
        )
        # Back to one entry per cache row; padding rows (index batch_size) are dropped.
        scatter = lambda x: jnp.zeros((self.batch_size,), x.dtype).at[rows].set(x, mode="drop")
        return cache, scatter(token), scatter(logp)

    def prefill(self, cache: KVCache, chunks: Sequence[Sequence[int] | None], starts: Sequence[int], rng):
        """Write chunks[b] at positions starts[b].. (None or empty = row untouched); `rng`: a key per row.

        Only the rows with a chunk are computed (their count padded to a power of two, at least
        batch_size / 8), so one episode's observation in a batch of 64 does not cost 64 rows' prefill.
        Returns (cache, next_token [B], next_logp [B]) for the rows' next token (device arrays, sharded
        like the rows; read them with `alejax.parallel.to_host`, which works on any number of hosts);
        untouched rows get 0.
        """
        self._check_keys(rng)
        lengths = np.array([0 if c is None else len(c) for c in chunks], np.int32)
        ends = np.asarray(starts) + lengths
        if np.any(ends > self.max_length):
            raise ValueError("a chunk does not fit in the cache; check the context limit before prefill")
        active = np.flatnonzero(lengths)
        n_rows = bucket_length(len(active), minimum=max(1, self.batch_size // 8), maximum=self.batch_size)
        rows = np.full(n_rows, self.batch_size, np.int32)  # padding rows: out of range, dropped
        rows[: len(active)] = active
        width = bucket_length(int(lengths.max(initial=1)), maximum=self.max_length)
        buffer = np.zeros((n_rows, width), np.int32)
        for k, row in enumerate(active):
            buffer[k, : lengths[row]] = chunks[row]
        row_starts = np.zeros(n_rows, np.int32)
        row_starts[: len(active)] = np.asarray(starts, np.int32)[active]
        row_lengths = np.zeros(n_rows, np.int32)
        row_lengths[: len(active)] = lengths[active]
        with self._mesh_context():
            cache, token, logp = self._prefill(
                self.params,
                cache,
                self._row_sharding(buffer),
                self._row_sharding(row_starts),
                self._row_sharding(row_lengths),
                self._row_sharding(rows),
                rng,
                view=self.cache_view(int(ends[lengths > 0].max(initial=1))),
            )
        return cache, token, logp

    def _copy_rows_impl(self, cache, source, view):
        self.compilations += 1
        # Row b takes row source[b]'s keys and values at positions [0, view) (source[b] = b: unchanged).
        return jax.tree.map(lambda x: x.at[:, :, :, :view].set(x[:, source, :, :view]), cache)

    def copy_rows(self, cache: KVCache, source: Sequence[int], end: int) -> KVCache:
        """Shared prefixes: row b's cache positions below `end` (at least) become row source[b]'s, so a
        prompt several rows share is prefilled once. Positions from `end` on are the rows' own (stale ones are
        masked, as ever); the copy costs a read and write of the rows' view, far less than a prefill."""
        with self._mesh_context():
            return self._copy_rows(
                cache, self._row_sharding(np.asarray(source, np.int32)), view=self.cache_view(end)
            )

    # -- decode --------------------------------------------------------------------------------------
    def _decode_layers(self):
        """Per-layer copies of `self.params`' layers, or None; made again once `self.params` is a new state
        (`update_params` makes one: weight syncs reach the decode)."""
        if not self.unstack:
            return None
        if self._unstacked[0] is not self.params:
            self._unstacked = (self.params, unstack_layers(self.params["layers"]))
        return self._unstacked[1]

    def _decode_impl(self, params, cache, token, position, budget, rows, rng, min_active, steps, view):
        self.compilations += 1
        params, layers = params  # layers: per-layer weights, or None (the stacked ones in params)
        model = nnx.merge(self.graphdef, params)
        stacked = cache
        if layers is not None:
            # With per-layer weights, each layer also gets its cache view [0, view) in its own buffers for the
            # segment (read and written in place; a slice of the stacked cache is copied at every step, 14%
            # of SmolLM2's b64 step), copied out and back once per segment.
            cache = [
                KVCache(stacked.k[i : i + 1, ..., :view, :], stacked.v[i : i + 1, ..., :view, :])
                for i in range(len(layers))
            ]
        if rows is not None:  # compute only the gathered rows; results go back to their cache rows below
            rng = rng[rows]
        batch = token.shape[0]
        out_tokens = jnp.zeros((batch, steps), jnp.int32)
        out_logp = jnp.zeros((batch, steps), jnp.float32)
        active = budget > 0

        def cond(carry):
            step, *_, active, _ = carry
            # End the segment once fewer than `min_active` rows still decode: their rows can then serve
            # episodes waiting for one (the scheduler asks for that when it has some).
            return (step < steps) & (jnp.sum(active) >= jnp.maximum(min_active, 1))

        def body(carry):
            step, cache, token, position, out_tokens, out_logp, count, active, rng = carry
            key = _at_positions(rng, position + 1)  # the sampled token's position picks each row's key
            feed_position = jnp.where(active, position, self.max_length)  # idle rows: dropped writes
            logits, cache = model(
                token[:, None],
                positions=feed_position[:, None],
                cache=cache,
                attend_length=view,
                cache_rows=rows,
                unstacked_layers=layers,
            )
            new_token, logp = sample_logits(logits[:, 0], key, self.sampling)
            out_tokens = out_tokens.at[:, step].set(jnp.where(active, new_token, 0))
            out_logp = out_logp.at[:, step].set(jnp.where(active, logp, 0.0))
            count = count + active
            position = position + active
            token = jnp.where(active, new_token, token)
            stopped = jnp.isin(new_token, self.stop_ids) | (count >= budget) | (position >= self.max_length)
            return step + 1, cache, token, position, out_tokens, out_logp, count, active & ~stopped, rng

        carry = (0, cache, token, position, out_tokens, out_logp, jnp.zeros_like(budget), active, rng)
        _, cache, token, position, out_tokens, out_logp, count, active, _ = jax.lax.while_loop(
            cond, body, carry
        )
        if layers is not None:  # the views back into the (donated) stacked cache
            cache = KVCache(
                *(
                    whole.at[..., :view, :].set(jnp.concatenate(parts))
                    for whole, parts in zip(stacked, ([c.k for c in cache], [c.v for c in cache]))
                )
            )
        if rows is not None:  # one entry per cache row again; padding rows (index batch_size) are dropped
            out_tokens, out_logp, count, active = (
                jnp.zeros((self.batch_size, *x.shape[1:]), x.dtype).at[rows].set(x, mode="drop")
                for x in (out_tokens, out_logp, count, active)
            )
        return cache, out_tokens, out_logp, count, active

    def decode(
        self, cache: KVCache, token, position, budget, rng, steps: int | None = None, min_active: int = 1
    ):
        """Feed `token[b]` at `position[b]` and sample up to min(steps, budget[b]) new tokens per row; rows with
        budget 0 are idle (at most `decode_rows` rows may have a budget). The segment ends after `steps`, or
        once fewer than `min_active` rows still decode.

        Returns (cache, tokens [B, steps], logp [B, steps], count [B], still_active [B]); a row's new tokens
        are tokens[b, :count[b]]; a row still active hit the segment end, not a stop token or its budget.
        `rng`: a key per row.
        """
        self._check_keys(rng)
        steps = steps or self.segment
        token = np.asarray(token, np.int32)
        position, budget = np.asarray(position, np.int32), np.asarray(budget, np.int32)
        # A row feeds positions position .. position + min(steps, budget) - 1 in this call.
        end = int((position + np.minimum(steps, budget))[budget > 0].max(initial=1))
        rows = None
        if self.decode_rows < self.batch_size:
            active = np.flatnonzero(budget > 0)
            if len(active) > self.decode_rows:
                raise ValueError(
                    f"{len(active)} rows with a budget for a sampler of decode_rows={self.decode_rows}"
                )
            rows = np.full(self.decode_rows, self.batch_size, np.int32)  # padding: out of range, idle
            rows[: len(active)] = active
            clipped = np.minimum(rows, self.batch_size - 1)
            token, position = token[clipped], position[clipped]
            budget = np.where(rows < self.batch_size, budget[clipped], 0)
            rows = self._row_sharding(rows)
        with self._mesh_context():
            return self._decode(
                (self.params, self._decode_layers()),
                cache,
                self._row_sharding(token),
                self._row_sharding(position),
                self._row_sharding(budget),
                rows,
                rng,
                np.int32(min_active),
                steps=steps,
                view=self.cache_view(end),
            )

    def _check_keys(self, rng) -> None:
        if getattr(rng, "shape", None) != (self.batch_size,):
            raise ValueError(
                f"rng must hold one key per row, shape ({self.batch_size},) (e.g. jax.random.split(key, "
                f"{self.batch_size})); got shape {getattr(rng, 'shape', None)}"
            )

    # -- convenience ---------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int | Sequence[int], seed: int = 0):
        """Single-turn generation for up to `batch_size` prompts: (tokens, logps) lists per prompt."""
        if len(prompts) > self.batch_size:
            raise ValueError(f"{len(prompts)} prompts for a sampler of batch size {self.batch_size}")
        n = len(prompts)
        chunks = list(prompts) + [None] * (self.batch_size - n)
        budgets = np.zeros(self.batch_size, np.int32)
        budgets[:n] = max_new_tokens
        keys = jax.random.split(
            jax.random.key(seed), self.batch_size
        )  # a row's tokens depend on its key only
        cache, token, logp = self.prefill(self.init_cache(), chunks, [0] * self.batch_size, keys)
        token, logp = to_host((token, logp))
        outputs = [[int(token[b])] for b in range(n)]
        logps = [[float(logp[b])] for b in range(n)]
        position = np.array([len(c) if c else 0 for c in chunks], np.int32)
        stop = set(np.asarray(self.stop_ids).tolist())
        budget = np.where(budgets > 1, budgets - 1, 0)
        for b in range(n):
            if outputs[b][0] in stop:
                budget[b] = 0
        budget = np.minimum(budget, self.max_length - 1 - position).clip(0)
        while budget.any():
            turn = budget.copy()  # at most decode_rows rows decode in one call; the others wait their turn
            turn[np.flatnonzero(turn)[self.decode_rows :]] = 0
            cache, tokens, lps, count, _ = self.decode(
                cache, [o[-1] for o in outputs] + [0] * (self.batch_size - n), position, turn, keys
            )
            tokens, lps, count = to_host((tokens, lps, count))
            for b in range(n):
                new = tokens[b, : count[b]].tolist()
                outputs[b] += new
                logps[b] += lps[b, : count[b]].tolist()
                if new and new[-1] in stop:
                    budget[b] = 0
                else:
                    budget[b] -= count[b]
            position = position + count
        return outputs, logps
