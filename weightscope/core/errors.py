"""The one exception type users see."""


class WeightscopeError(ValueError):
    """Bad input or an unsupported model, with a one-line message saying what was wrong and what is right.

    The CLI prints ``str(err)`` and exits with status 2; library callers can catch it like ValueError.
    """
