"""Fixtures of the study tests; helpers live in study_helpers.py (unique module name)."""

from study_helpers import fake_train  # noqa: F401  (fixture)
