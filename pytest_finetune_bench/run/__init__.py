"""Execution of a plan: the lm-eval child, its supervision and recovery, and the session that ties runs together."""
