"""Reliability suite: fault matrix, estimator properties, crash safety, security and memory (issue 7)."""
