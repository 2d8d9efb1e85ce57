"""The demo: the whole pipeline on the bundled corpus, with a report."""
