"""Errors the serving layer raises for input a user can fix (no heavy imports: the CLI classifies them)."""


class RegistrationRefused(ValueError):
    """A checkpoint that must not be registered: the message says why, in one line."""


class PromotionRefused(ValueError):
    """A champion move that must not happen (an incomplete version, a worse one or one of another test set
    without --force, nothing to roll back to): the message says why, in one line."""
