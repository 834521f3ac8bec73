"""The measure wing: timing, the worker process, and optimize (reference, candidates, compare)."""
