"""A synthetic token source whose best achievable loss is known exactly.

An order-k Markov chain over V symbols: each context (the last k tokens) has its own next-token
distribution drawn from a symmetric Dirichlet(alpha). Its entropy rate
``H = sum_c pi(c) * H(P(.|c))`` (Cover & Thomas, ch. 4), with ``pi`` the stationary distribution
over contexts, is the lowest expected cross-entropy per token any model can reach, so a
convergence test can ask "how close to the optimum did training get?" in nats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class MarkovChain:
    vocab: int
    order: int
    probs: np.ndarray  # (V**k, V): next-token distribution per context

    @classmethod
    def random(cls, vocab: int, order: int, alpha: float, seed: int) -> MarkovChain:
        rng = np.random.default_rng([seed, vocab, order])
        probs = rng.dirichlet(np.full(vocab, alpha), size=vocab**order)
        probs = np.maximum(probs, 1e-12)
        return cls(vocab, order, probs / probs.sum(axis=1, keepdims=True))

    def _next_context(self, ctx: np.ndarray, tok: np.ndarray) -> np.ndarray:
        # context id = base-V number of the last k tokens (oldest most significant)
        return (ctx * self.vocab) % (self.vocab**self.order) + tok

    def stationary(self, tol: float = 1e-13, max_iter: int = 100_000) -> np.ndarray:
        """Stationary distribution over contexts, by power iteration on the sparse transition."""
        n = self.vocab**self.order
        ctx = np.arange(n)
        succ = np.stack([self._next_context(ctx, np.full(n, t)) for t in range(self.vocab)], axis=1)
        pi = np.full(n, 1.0 / n)
        for _ in range(max_iter):
            # Lazy chain (average with identity) converges even if the chain is periodic.
            new = np.zeros(n)
            np.add.at(new, succ.ravel(), (pi[:, None] * self.probs).ravel())
            new = 0.5 * (new + pi)
            if np.abs(new - pi).sum() < tol:
                return new
            pi = new
        return pi

    def entropy_rate(self) -> float:
        """Exact entropy rate in nats per token."""
        h = -(self.probs * np.log(self.probs)).sum(axis=1)
        return float(self.stationary() @ h)

    def sample(self, n_tokens: int, seed: int, n_chains: int = 256) -> np.ndarray:
        """``n_tokens`` tokens: ``n_chains`` independent runs, vectorized over chains, concatenated."""
        rng = np.random.default_rng([seed, 1])
        length = -(-n_tokens // n_chains)
        cdf = np.cumsum(self.probs, axis=1)
        cdf[:, -1] = 1.0
        out = np.empty((n_chains, length), dtype=np.uint16)
        ctx = rng.integers(0, self.vocab**self.order, size=n_chains)
        for _ in range(4 * self.order):  # burn-in, away from the uniform start
            ctx = self._next_context(ctx, self._draw(cdf, ctx, rng))
        for t in range(length):
            tok = self._draw(cdf, ctx, rng)
            out[:, t] = tok
            ctx = self._next_context(ctx, tok)
        return out.reshape(-1)[:n_tokens]

    @staticmethod
    def _draw(cdf: np.ndarray, ctx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u = rng.random(len(ctx))
        return (cdf[ctx] < u[:, None]).sum(axis=1)
