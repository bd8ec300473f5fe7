"""Search: BM25 (bm25s) over jieba-tokenized product text (title + attributes + category + options).

A world describes each product as a bag of phrases; each distinct phrase is cut by jieba once and a product's
tokens are the concatenation of its phrases' tokens, which is what cutting the space-joined text gives and
keeps a 200k-product index build to seconds. One index per world, shared by every env on that world.
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading

import bm25s
import jieba
import numpy as np

from alejax.envs.shop import catalog

TOP_K = 150
PAGE_SIZE = 20
_WORD = re.compile(r"\w")


@dataclasses.dataclass
class SearchIndex:
    retriever: bm25s.BM25
    vocab: dict[str, int]
    doc_tokens: np.ndarray  # [N, L] token ids, -1 pads (kept for the brute-force baseline and tests)
    tokenizer: jieba.Tokenizer
    build_seconds: float = 0.0

    def query_ids(self, query: str) -> list[int]:
        ids = [self.vocab.get(t) for t in tokenize(self.tokenizer, query)]
        return [i for i in ids if i is not None]

    def search(self, query: str, k: int = TOP_K) -> list[int]:
        """Product indices of the top-k matches, best first (ties by index); no match -> []."""
        ids = self.query_ids(query)
        if not ids:
            return []
        scores = self.retriever.get_scores_from_ids(ids)
        return _top_k(scores, k)

    def brute_force_scores(self, query: str, k1: float = 1.5, b: float = 0.75) -> np.ndarray:
        """The same BM25 (bm25s' default "lucene" variant, which drops the rank-neutral (k1 + 1) factor) by
        a linear scan over every document: the baseline the index is benchmarked and tested against."""
        ids = self.query_ids(query)
        toks = self.doc_tokens
        n = toks.shape[0]
        doc_len = (toks >= 0).sum(1)
        norm = k1 * (1 - b + b * doc_len / doc_len.mean())
        scores = np.zeros(n)
        for t in ids:
            tf = (toks == t).sum(1)
            df = int((tf > 0).sum())
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            scores += idf * tf / (tf + norm)
        return scores


def _top_k(scores: np.ndarray, k: int) -> list[int]:
    positive = np.flatnonzero(scores > 0)
    if positive.size > k:
        part = np.argpartition(-scores[positive], k - 1)[:k]
        positive = positive[part]
    order = np.lexsort((positive, -scores[positive]))
    return positive[order].tolist()


def make_tokenizer(extra_words: list[str] = ()) -> jieba.Tokenizer:
    """A private jieba tokenizer that knows the world's vocabulary (so 纯棉, 官方旗舰店 ... stay whole)."""
    jieba.setLogLevel(60)
    tokenizer = jieba.Tokenizer()
    words = set(extra_words)
    for dom in catalog.DOMAINS:
        words.update(dom["modifiers"])
        words.update(dom["brands"])
        for base, _ in dom["bases"]:
            words.update(catalog.surface_forms(base))
        for _, values in dom["slots"].values():
            for v in values:
                words.update(catalog.surface_forms(v))
        for values in dom["options"].values():
            for v in values:
                words.update(catalog.surface_forms(v))
    for s in catalog.SERIES:
        words.update(catalog.surface_forms(s))
    words.update(catalog.GENERIC_WORDS)
    for w in sorted(words):
        if " " not in w and len(w) > 1:
            tokenizer.add_word(w, freq=200000)
    return tokenizer


def tokenize(tokenizer: jieba.Tokenizer, text: str) -> list[str]:
    return [t.lower() for t in tokenizer.lcut(text) if _WORD.search(t)]


def build_index(
    phrase_ids: np.ndarray, phrases: list[str], tokenizer: jieba.Tokenizer | None = None
) -> SearchIndex:
    """Index documents given as phrase ids ([N, P], -1 pads) into a phrase table."""
    import time

    start = time.perf_counter()
    tokenizer = tokenizer or make_tokenizer([p for p in phrases if len(p) <= 12])
    vocab: dict[str, int] = {}
    cut = [[vocab.setdefault(t, len(vocab)) for t in tokenize(tokenizer, p)] for p in phrases]
    width = max(1, max(len(c) for c in cut))
    phrase_tok = np.full((len(phrases) + 1, width), -1, np.int64)  # last row: the pad phrase
    for i, c in enumerate(cut):
        phrase_tok[i, : len(c)] = c
    doc_tokens = phrase_tok[phrase_ids].reshape(phrase_ids.shape[0], -1)
    # Left-pack each row (valid ids first) so rows can be trimmed to the longest document.
    order = np.argsort(doc_tokens < 0, axis=1, kind="stable")
    doc_tokens = np.take_along_axis(doc_tokens, order, axis=1)
    lengths = (doc_tokens >= 0).sum(1)
    doc_tokens = doc_tokens[:, : max(1, lengths.max())]
    corpus = [row[:n].tolist() for row, n in zip(doc_tokens, lengths)]
    retriever = bm25s.BM25()
    retriever.index((corpus, vocab), show_progress=False)
    return SearchIndex(retriever, vocab, doc_tokens, tokenizer, time.perf_counter() - start)


_CACHE: dict[tuple, SearchIndex] = {}
_LOCK = threading.Lock()


def get_index(world) -> SearchIndex:
    """The world's index, built once per world (keyed by `world.key`) and shared between env instances."""
    with _LOCK:
        if world.key not in _CACHE:
            phrase_ids, phrases = world.search_phrases()
            _CACHE[world.key] = build_index(phrase_ids, phrases)
        return _CACHE[world.key]
