"""One exception type for every user-facing problem.

The CLI prints ``error: <message>`` for an ``LlmgenError`` and exits non-zero without a traceback,
so each message must name the problem (file, field, task, value) on one line.
"""


class LlmgenError(Exception):
    """A problem with the user's input or configuration, reported as one clear line."""
