"""Errors of the model library that a user fixes in the config (no heavy imports: the CLI and the stage
task classify them)."""


class TrainingDiverged(ValueError):
    """The training loss became NaN or infinite: retrying the same config repeats it, so it is never retried."""
