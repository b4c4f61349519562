"""Virtual keys: gateway credentials that stand for a tenant (and its budget), stored hashed.

::

    from outlay.keys import open_key_store
    store = open_key_store()                       # .outlay/keys.db, or OUTLAY_KEYS_URL
    key, secret = store.create("acme", feature="chat", budget="25.00/month")
    print(secret)                                  # shown once: olk_...

See docs/gateway.md.
"""

from __future__ import annotations

from ._key import PREFIX, VirtualKey, generate_secret, hash_secret, parse_budget
from ._store import InMemoryKeyStore, KeyStore, SQLiteKeyStore, default_keys_url, open_key_store

__all__ = [
    "PREFIX",
    "InMemoryKeyStore",
    "KeyStore",
    "SQLiteKeyStore",
    "VirtualKey",
    "default_keys_url",
    "generate_secret",
    "hash_secret",
    "open_key_store",
    "parse_budget",
]
