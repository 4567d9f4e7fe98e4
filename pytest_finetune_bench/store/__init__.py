"""Everything on disk: atomic files, locks, model fingerprints, the base-score cache and the summaries."""
