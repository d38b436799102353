"""Diversity of an instruction set, measured on sentence embeddings (Only-IF, real-data part).

Three complementary measures, each well defined on hand cases:

- ``num_clusters``: agglomerative clustering (average linkage, cosine distance) cut at a
  distance threshold: how many distinct "kinds" of instruction there are. n identical items -> 1;
  n mutually orthogonal items -> n for any threshold < 1.
- ``mean_pairwise_distance``: mean cosine distance ``1 - cos`` over pairs: 0 for identical items,
  1 for orthogonal ones.
- ``vendi_score`` (Friedman & Dieng 2023): ``exp(-sum l log l)`` over the eigenvalues ``l`` of
  ``K / n`` with ``K`` the cosine-similarity matrix; the "effective number of distinct items",
  1 for identical items and n for orthogonal ones.

``select_diverse`` builds a fixed-size subset that covers several domains (the paper's
specialist/generalist mixing): per-domain quotas, filled by greedy farthest-point selection so
each pick is the item least similar to everything already chosen.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from llmgen.errors import LlmgenError


def _unit(emb: np.ndarray) -> np.ndarray:
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] == 0:
        raise LlmgenError(f"embeddings must be a non-empty [n, d] array, got shape {emb.shape}")
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise LlmgenError("an embedding is the zero vector: cosine similarity is undefined")
    return emb / norms


def mean_pairwise_distance(emb: np.ndarray) -> float:
    """Mean cosine distance over the n(n-1)/2 pairs (0.0 for a single item).

    Uses ``sum_ij cos_ij = |sum_i u_i|^2`` so it needs no n x n matrix.
    """
    u = _unit(emb)
    n = len(u)
    if n < 2:
        return 0.0
    total = float(np.sum(u.sum(0) ** 2))
    mean_sim = (total - n) / (n * (n - 1))
    return float(min(2.0, max(0.0, 1.0 - mean_sim)))


def vendi_score(emb: np.ndarray) -> float:
    """exp(entropy of the eigenvalues of K/n), K = cosine similarities.

    K/n = U U^T / n shares its non-zero eigenvalues with U^T U / n (d x d), which is cheaper when
    there are more items than dimensions.
    """
    u = _unit(emb)
    n, d = u.shape
    gram = (u.T @ u if n > d else u @ u.T) / n
    eig = np.linalg.eigvalsh(gram)
    eig = eig[eig > 1e-12]
    return float(np.exp(-np.sum(eig * np.log(eig))))


def num_clusters(emb: np.ndarray, threshold: float = 0.5, linkage: str = "average") -> int:
    """Clusters of agglomerative clustering cut at cosine distance ``threshold``."""
    from scipy.cluster.hierarchy import fcluster
    from scipy.cluster.hierarchy import linkage as scipy_linkage
    from scipy.spatial.distance import pdist

    if not 0 <= threshold <= 2:
        raise LlmgenError(f"cosine distance threshold must be in [0, 2], got {threshold}")
    u = _unit(emb)
    if len(u) < 2:
        return len(u)
    dist = np.clip(pdist(u, metric="cosine"), 0.0, 2.0)
    tree = scipy_linkage(dist, method=linkage)
    return int(fcluster(tree, t=threshold, criterion="distance").max())


def diversity_report(emb: np.ndarray, threshold: float = 0.5, max_items: int | None = 5000,
                     seed: int = 0) -> dict:
    """All measures; clustering (O(n^2) memory) uses a seeded sample of ``max_items`` items."""
    emb = np.asarray(emb)
    n = len(emb)
    sample = emb
    if max_items is not None and n > max_items:
        sample = emb[np.sort(np.random.default_rng(seed).choice(n, max_items, replace=False))]
    clusters = num_clusters(sample, threshold)
    return {
        "n": n,
        "num_clusters": clusters,
        "clusters_per_item": clusters / len(sample),
        "cluster_threshold": threshold,
        "clustered_items": len(sample),
        "mean_pairwise_distance": mean_pairwise_distance(emb),
        "vendi_score": vendi_score(emb),
    }


def pca_2d(emb: np.ndarray) -> np.ndarray:
    """``[n, 2]`` coordinates on the first two principal components."""
    x = np.asarray(emb, dtype=np.float64)
    x = x - x.mean(0, keepdims=True)
    if len(x) < 2:
        return np.zeros((len(x), 2))
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    coords = x @ vt[:2].T
    return np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))


def domain_quotas(domains: Sequence[str], size: int, weights: Mapping[str, float] | None = None) -> dict[str, int]:
    """How many items each domain contributes to a subset of ``size``.

    Quotas follow ``weights`` (equal by default), are capped by what each domain has, and the
    left-over is handed to domains that still have items, so the total is exactly ``size``.
    """
    available = Counter(domains)
    if size < 1 or size > sum(available.values()):
        raise LlmgenError(f"subset size must be in [1, {sum(available.values())}], got {size}")
    weights = dict(weights or {d: 1.0 for d in available})
    unknown = set(weights) - set(available)
    if unknown:
        raise LlmgenError(f"domain weights name unknown domains: {', '.join(sorted(unknown))} "
                          f"(known: {', '.join(sorted(available))})")
    if any(w < 0 for w in weights.values()) or not sum(weights.values()) > 0:
        raise LlmgenError("domain weights must be >= 0 with a positive sum")
    quotas = dict.fromkeys(available, 0)
    remaining = size
    active = sorted(d for d in available if weights.get(d, 0) > 0)
    while remaining > 0 and active:
        # Largest-remainder split of what is left; a capped domain hands its excess to the next round.
        total_w = sum(weights[d] for d in active)
        raw = {d: remaining * weights[d] / total_w for d in active}
        alloc = {d: int(raw[d]) for d in active}
        for d in sorted(active, key=lambda d: (alloc[d] - raw[d], d))[: remaining - sum(alloc.values())]:
            alloc[d] += 1
        for d in active:
            quotas[d] += min(alloc[d], available[d] - quotas[d])
        remaining = size - sum(quotas.values())
        active = [d for d in active if quotas[d] < available[d]]
    if remaining:  # weighted domains ran out; fill from the zero-weight ones
        for d in sorted(available):
            take = min(remaining, available[d] - quotas[d])
            quotas[d] += take
            remaining -= take
    return quotas


def select_diverse(emb: np.ndarray, domains: Sequence[str], size: int,
                   weights: Mapping[str, float] | None = None, seed: int = 0) -> list[int]:
    """Indices of a ``size``-item subset: domain quotas, filled by greedy farthest-point picks.

    Starts from a seeded random item; each step takes, among domains with quota left, the item
    whose nearest already-chosen neighbour is farthest (max-min cosine distance). Cost is
    O(n * size * d), fine for tens of thousands of candidates.
    """
    u = _unit(emb)
    if len(domains) != len(u):
        raise LlmgenError(f"{len(domains)} domain labels for {len(u)} embeddings")
    quotas = domain_quotas(domains, size, weights)
    labels = np.asarray([str(d) for d in domains])
    left = {d: q for d, q in quotas.items() if q > 0}
    eligible = np.isin(labels, list(left))
    start = random.Random(seed).choice(list(np.flatnonzero(eligible)))
    chosen: list[int] = []
    min_dist = np.full(len(u), np.inf)

    def take(i: int) -> None:
        chosen.append(int(i))
        d = labels[i]
        left[d] -= 1
        if left[d] == 0:
            eligible[labels == d] = False
        eligible[i] = False
        np.minimum(min_dist, 1.0 - u @ u[i], out=min_dist)

    take(start)
    while len(chosen) < size:
        score = np.where(eligible, min_dist, -np.inf)
        take(int(np.argmax(score)))
    return chosen
