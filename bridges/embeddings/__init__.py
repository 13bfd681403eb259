"""Text embeddings for the knowledge index: the offline wordllama default and any
OpenAI-compatible ``/v1/embeddings`` server. See :mod:`bridges.embeddings.base`."""

from bridges.embeddings.base import Embedder, EmbeddingError, normalise_rows
from bridges.embeddings.openai import OpenAIEmbedder
from bridges.embeddings.wordllama import WordLlamaEmbedder

__all__ = ["Embedder", "EmbeddingError", "OpenAIEmbedder", "WordLlamaEmbedder", "normalise_rows"]
