"""Static HTML reports a person opens from disk."""
