"""From two runs to a verdict: headline scores, per-document statistics, flips and the gates (no pytest here)."""
