"""Readers of raw corpora -> typed samples (TextDoc, ImageText, AudioText)."""
