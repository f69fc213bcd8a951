"""alloop: the active-learning loop domain (records, contracts, controller, entry points).

Nothing here imports torch, transformers, SQLAlchemy or the Label Studio SDK: those live in
``connectors`` and are wired in by :mod:`loop.wiring`.
"""

__version__ = "0.1.0"
