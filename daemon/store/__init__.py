"""The ticket store: models, connections and migrations."""
from daemon.store.db import Store, StoreUnavailable

__all__ = ["Store", "StoreUnavailable"]
