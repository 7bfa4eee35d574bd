"""The Failed Sends store: SQLAlchemy models, repository functions and Alembic migrations."""

from worker.store.db import Store, open_store

__all__ = ["Store", "open_store"]
