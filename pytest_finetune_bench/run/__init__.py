"""Execution of a plan: the lm-eval child, its supervision, its early stopping and recovery."""
