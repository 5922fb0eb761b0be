"""Data preparation for the rankers: MovieLens loading and (history, negatives) sample building."""
