"""Feature extractors for the evaluation metrics."""
