"""The one exception type a user-caused failure travels in.

Its message is one sentence that names the thing at fault (a file, a config.json field, a container id) and, where it
helps, what to do. The CLI prints it on stderr, writes it to the --log file and exits with status 1.
"""


class RuneError(Exception):
    """A failure the user can act on; str(err) is the sentence shown to them."""
