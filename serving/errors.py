"""Errors the serving layer raises for input a user can fix (no heavy imports: the CLI classifies them)."""


class RegistrationRefused(ValueError):
    """A checkpoint that must not be registered: the message says why, in one line."""
