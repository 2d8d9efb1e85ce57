"""Fixtures of the shard tests; the helpers live in shard_helpers.py (a unique module name:
every tests/ folder is on sys.path, so two `conftest` imports would collide)."""

from shard_helpers import text_set, vocab  # noqa: F401  (fixtures)
