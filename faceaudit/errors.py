"""The exception the command line turns into a one-line error, and the warning category of every stage."""


class FaceauditError(Exception):
    """Bad input or a failed precondition; the message names the file, line or key.

    The CLI and the paper's scripts print it as one line and exit with ``exit_code``.
    """

    exit_code = 2


class FaceauditWarning(UserWarning):
    """Something worth telling the user that does not stop the run."""


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C that a stage caught to say what it kept; the message is shown as it is."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when the message is empty)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
