"""ScaiBot knowledge: documents, extraction, indexing and hybrid retrieval (CONTRACT 13).

- :mod:`.service` ``KnowledgeService``: documents of a bot's collection, the
  ``BotDeletionHook`` (``delete_collection_txn``), ``collection_exists``; owns
- :mod:`.index` ``Indexer`` (the background pipeline) and
- :mod:`.retrieval` ``KnowledgeRetriever`` (``ports.Retriever``).
- :mod:`.routes` ``install(...)``: the five document routes.
- :mod:`.build` ``build_knowledge(...)``: the service from ``[knowledge]``.

Kept free of imports: ``python -m ...knowledge.extract`` (the extraction child)
imports this package first and should start quickly.
"""
