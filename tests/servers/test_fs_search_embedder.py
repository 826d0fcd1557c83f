"""The embedder with the real model, in-process: the query path gives the very vectors the indexing path gives."""

from __future__ import annotations

import numpy as np
import pytest

from llmbasedos.servers.fs.semantic.embedder import DIMENSION, Embedder

pytest.importorskip("sentence_transformers")


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


QUERIES = [
    "birds in the cold",
    "x",
    "Comment s'occuper d'un chat ? 猫の世話",
    # Longer than the model's 256-token window: both paths must cut it the same way.
    "a long question about the garden, the kitchen and the accounts of the house " * 40,
]


@pytest.mark.parametrize("query", QUERIES, ids=["short", "one-letter", "non-ascii", "over-window"])
def test_query_vector_equals_the_indexing_vector(embedder: Embedder, query: str) -> None:
    fast = embedder.encode_query(query)
    batch = embedder.encode([query, "another text in the same batch"])
    assert fast.shape == (1, DIMENSION) and fast.dtype == np.float32 and fast.flags.c_contiguous
    assert np.allclose(fast[0], batch[0], atol=1e-5)
    assert abs(float(np.linalg.norm(fast[0])) - 1.0) < 1e-5


def test_query_vectors_rank_by_meaning(embedder: Embedder) -> None:
    docs = embedder.encode(["Penguins huddle together for warmth in Antarctica.",
                            "Quarterly tax returns are due at the end of the month."])
    scores = docs @ embedder.encode_query("birds in the cold")[0]
    assert scores[0] > scores[1]
    assert embedder.loads == 1
