"""Semantic search over the files of the virtual root: chunking, text extraction, embeddings, FAISS store."""

from llmbasedos.servers.fs.semantic.chunking import Chunk, chunk_text
from llmbasedos.servers.fs.semantic.embedder import DIMENSION, MODEL_NAME, Embedder, require_search_extra
from llmbasedos.servers.fs.semantic.extract import Extracted, Unindexable, extract_text

__all__ = ["Chunk", "chunk_text", "DIMENSION", "MODEL_NAME", "Embedder", "require_search_extra", "Extracted",
           "Unindexable", "extract_text"]
