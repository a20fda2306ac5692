"""The one exception type for bad pipeline input."""


class KGInputError(ValueError):
    """Input that is missing, empty or malformed; the message names the file (and line)."""
