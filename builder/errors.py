"""The one exception type users see: cli.py prints its message as `error: ...` and exits 2."""


class AtlasError(Exception):
    """A problem with the user's input, named so that they can fix it (file, field, value, expectation)."""
