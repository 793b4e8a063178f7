"""Everything that touches SQLite or the data dir. All SQL of runner lives in this package."""

from runner.store.batches import BatchStore
from runner.store.db import Database
from runner.store.files import FileStore
from runner.store.idempotency import IdempotencyStore
from runner.store.models import ModelStates
from runner.store.stats import StatsStore
from runner.store.webhooks import WebhookStore

__all__ = ["BatchStore", "Database", "FileStore", "IdempotencyStore", "ModelStates", "StatsStore", "WebhookStore"]
