"""What one request may ask of a served model: checked before any work on it (no heavy imports).

The model (``serving.pyfunc_model``) checks rows and characters wherever it
runs; ``stmem serve`` (``serving.server``) checks the body and the characters
before MLflow parses the request.
"""
# Longer rows are refused: the model keeps only its newest max_segments segments anyway,
# and parsing a megabyte costs seconds of CPU.
MAX_CHARS = {"context": 100_000, "question": 1_000}
MAX_ROWS = 256
# All rows together: parsing costs up to ~85 us a character (spaCy on one long sentence),
# so 200,000 characters is at most ~17 s of CPU, inside the server's default 60 s timeout.
MAX_REQUEST_CHARS = 200_000
# MAX_REQUEST_CHARS characters are at most ~2.4 MB of JSON with every one escaped (\uXXXX, or
# two for a surrogate pair); 4 MiB leaves room for the rest and still parses in milliseconds.
MAX_BODY_BYTES = 4 * 1024 * 1024
