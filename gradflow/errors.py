"""The one exception type for mistakes a user can fix (bad key, bad value, missing file)."""


class GradflowError(Exception):
    """A user-fixable error. The CLI prints its message as one red line and exits with code 1.

    The message must name the key, value or path at fault and, where there is a fixed set,
    the valid choices.
    """
