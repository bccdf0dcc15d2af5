"""The one exception type a user-caused failure travels in, and how a message shows what it names.

Its message is one sentence that names the thing at fault (a file, a config.json field, a container id) and, where it
helps, what to do. The CLI prints it on stderr, writes it to the --log file and exits with status 1.
"""


class RuneError(Exception):
    """A failure the user can act on; str(err) is the sentence shown to them."""


def q(text: str) -> str:
    """A path or an argument as a message shows it: as it is when every character prints, else as a quoted literal
    with escapes (a newline, a control character or a lone surrogate would split the line or fail to encode)."""
    return text if text.isprintable() else ascii(text)


def shown(value: object, limit: int = 60) -> str:
    """A value from a JSON document as a message quotes it: Python's repr, ASCII only, cut to about `limit`
    characters."""
    text = ascii(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
