"""Serving: answer from raw text with a trained checkpoint, the MLflow pyfunc, and the registry (champion/challenger)."""
