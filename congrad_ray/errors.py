"""User errors: problems with the user's config, data, model or paths. The CLI prints them one line per problem,
without a traceback, and exits 2."""

from __future__ import annotations


class ConfigError(ValueError):
    """A user error in the configuration; ``str()`` is one line per problem, each naming the fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class InputError(ValueError):
    """The input cannot be read as a preference dataset; the message is one line naming the fix."""
