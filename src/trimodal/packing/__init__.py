"""Unified vocabulary, token tables and sequence packing."""
