"""Tier A of the robustness benchmark: a frozen-feature preference world with planted artifacts (numpy).

Per response: quality q in R^4 (gold utility u = w.q), length l, sycophancy s in {0, 1}, nuisance n in R^8;
embedding h = W2 tanh(W1 [q, a l, a (2s - 1), n]) + noise in R^64 (fixed random W, salience a). The observed
label is Bradley-Terry on u; the artifacts are attached *given the label*: P(l_chosen > l_rejected) = rho,
s_chosen ~ Bern(p_c), s_rejected ~ Bern(p_r). Test splits use gold labels (the higher u is chosen).
"""

from __future__ import annotations

import dataclasses

import numpy as np

# (rho, p_c, p_r) per split, as in spec/causal_rm.md.
SPLITS = {
    "train": (0.9, 0.8, 0.2),
    "iid": (0.9, 0.8, 0.2),
    "balanced": (0.5, 0.3, 0.3),
    "reversed": (0.1, 0.2, 0.8),
}


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    d_q: int = 4
    d_n: int = 8
    d_hidden: int = 64
    d_h: int = 64
    salience: float = 2.0  # artifacts enter the embedding louder than quality
    noise: float = 0.1
    beta: float = 5.0  # inverse temperature of the annotators' Bradley-Terry labels


class World:
    """Fixed random maps of one world (one seed); draws pairs, best-of-N pools and counterfactuals."""

    def __init__(self, config: WorldConfig = WorldConfig(), seed: int = 0):
        self.config = c = config
        rng = np.random.default_rng(seed)
        d_in = c.d_q + 2 + c.d_n
        self.w1 = rng.normal(size=(d_in, c.d_hidden)) / np.sqrt(d_in)
        self.w2 = rng.normal(size=(c.d_hidden, c.d_h)) / np.sqrt(c.d_hidden)
        w = rng.normal(size=c.d_q)
        self.w = w / np.linalg.norm(w)

    def utility(self, q: np.ndarray) -> np.ndarray:
        return q @ self.w

    def embed(self, q, length, syco, nuisance, noise) -> np.ndarray:
        a = self.config.salience
        x = np.concatenate([q, a * length[:, None], a * (2.0 * syco[:, None] - 1.0), nuisance], axis=1)
        return (np.tanh(x @ self.w1) @ self.w2 + self.config.noise * noise).astype(np.float32)

    def responses(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """n independent responses' latents (artifacts from their marginal: l ~ N(0,1), s ~ Bern(1/2))."""
        c = self.config
        return {
            "q": rng.normal(size=(n, c.d_q)),
            "length": rng.normal(size=n),
            "syco": (rng.random(n) < 0.5).astype(np.float64),
            "nuisance": rng.normal(size=(n, c.d_n)),
            "noise": rng.normal(size=(n, c.d_h)),
        }

    def features(self, latents: dict[str, np.ndarray]) -> np.ndarray:
        return self.embed(
            latents["q"], latents["length"], latents["syco"], latents["nuisance"], latents["noise"]
        )

    def pairs(
        self, n: int, split: str, rng: np.random.Generator, gold: bool = False, annotator_bias: float = 0.0
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """n pairs: ({h_w, h_l [n, d_h], attrs_w, attrs_l [n, 2] (length, syco), u_w, u_l}, chosen latents).

        annotator_bias > 0 is the control world: artifacts are drawn independently and the *label* itself
        prefers the longer / sycophantic response (then an artifact-reading reward is the right one).
        """
        rho, p_c, p_r = SPLITS[split]
        a, b = self.responses(n, rng), self.responses(n, rng)
        u_a, u_b = self.utility(a["q"]), self.utility(b["q"])
        if annotator_bias:
            logit = u_a - u_b + annotator_bias * (a["length"] - b["length"] + a["syco"] - b["syco"])
            a_wins = rng.random(n) < 1.0 / (1.0 + np.exp(-self.config.beta * logit))
        else:
            a_wins = (
                u_a > u_b if gold else rng.random(n) < 1.0 / (1.0 + np.exp(-self.config.beta * (u_a - u_b)))
            )
        w = {k: np.where(_col(a_wins, v), v, b[k]) for k, v in a.items()}
        lo = {k: np.where(_col(a_wins, v), b[k], v) for k, v in a.items()}
        if not annotator_bias:
            # Attach artifacts given the (observed) label.
            l1, l2 = rng.normal(size=n), rng.normal(size=n)
            longer_to_chosen = rng.random(n) < rho
            w["length"] = np.where(longer_to_chosen, np.maximum(l1, l2), np.minimum(l1, l2))
            lo["length"] = np.where(longer_to_chosen, np.minimum(l1, l2), np.maximum(l1, l2))
            w["syco"] = (rng.random(n) < p_c).astype(np.float64)
            lo["syco"] = (rng.random(n) < p_r).astype(np.float64)
        out = {
            "h_w": self.features(w),
            "h_l": self.features(lo),
            "attrs_w": np.stack([w["length"], w["syco"]], 1).astype(np.float32),
            "attrs_l": np.stack([lo["length"], lo["syco"]], 1).astype(np.float32),
            "u_w": self.utility(w["q"]).astype(np.float32),
            "u_l": self.utility(lo["q"]).astype(np.float32),
        }
        return out, w


def _col(mask: np.ndarray, like: np.ndarray) -> np.ndarray:
    return mask.reshape((-1,) + (1,) * (like.ndim - 1))
