"""The one base class of user-facing errors: bad input or usage, which every tool reports in one line on
stderr with exit status 2 (DESIGN.md "Command-line conventions"). Anything else that escapes a tool is an
internal bug and keeps its traceback."""


class UserError(Exception):
    """Bad input or usage: a model that does not parse or verify, a malformed file, an option out of range,
    a plan over budget. The message names the input and says what is wrong, in one line when it can."""
