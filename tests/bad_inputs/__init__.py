"""The bad-input corpus (corpus.py: the table of cases and how they run; report.py: per-tool counts)."""
