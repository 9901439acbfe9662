"""User errors: problems with the user's config, data, model or paths. The CLI prints them one line per problem,
without a traceback, and exits 2, also when one was raised inside a Ray task, actor or Train worker
(:func:`user_error` finds it behind Ray's wrappers). Anything else is a bug and keeps its traceback."""

from __future__ import annotations

import functools
import re


class ConfigError(ValueError):
    """A user error in the configuration, model or paths; ``str()`` is one line per problem, each naming the fix."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))

    def __reduce__(self):  # pickles whole across Ray's process boundary (the default would split the joined text)
        return type(self), (self.problems,)


class InputError(ValueError):
    """The input cannot be read as a preference dataset; the message is one line naming the fix."""


USER_ERRORS = (ConfigError, InputError)


def user_errors_at_call(cls: type) -> type:
    """For a Ray Data ``map_batches`` actor class: a user error its constructor raises (a model that does not load) is
    kept and raised by every call instead. Ray prints a failed actor constructor's traceback on the driver's console; a
    failed call reaches the driver as an exception, which the CLI turns into one line."""
    init, call = cls.__init__, cls.__call__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        self._init_error = None
        try:
            init(self, *args, **kwargs)
        except USER_ERRORS as e:
            self._init_error = e

    @functools.wraps(call)
    def __call__(self, *args, **kwargs):
        if self._init_error is not None:
            raise self._init_error
        return call(self, *args, **kwargs)

    cls.__init__, cls.__call__ = __init__, __call__
    return cls


# How Python's traceback module writes one of them; Ray keeps only this text of an exception a Ray Data UDF raised
# (its UserCodeException wrapper drops the exception object itself).
_WRITTEN = re.compile(r"^congrad_ray\.errors\.(ConfigError|InputError): (.*?)(?:\n\s*\n|\Z)", re.MULTILINE | re.DOTALL)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def user_error(exc: BaseException) -> ConfigError | InputError | None:
    """The user error behind ``exc``, or None (a bug). Ray keeps an exception raised in a task or Train worker as
    ``cause`` (``RayTaskError``), Ray Train as ``worker_failures`` / ``controller_failure``, Python chains it as
    ``__cause__`` / ``__context__``; from a Ray Data UDF only its text survives, inside the ``RayTaskError``'s
    message, and the error is rebuilt from it."""
    seen: set[int] = set()
    texts: list[str] = []
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        inner = [getattr(e, "cause", None), getattr(e, "controller_failure", None)]
        inner += list((getattr(e, "worker_failures", None) or {}).values())
        inner = [x for x in inner if isinstance(x, BaseException)]
        if isinstance(e, USER_ERRORS) and not inner:  # Ray's dual-class wrappers are instances too: unwrap them
            return e
        if type(e).__module__.startswith("ray"):
            texts.append(str(e))
        todo += [*inner, e.__cause__, e.__context__]
    for text in texts:
        if found := _WRITTEN.search(_ANSI.sub("", text)):
            kind, message = found.groups()
            return ConfigError(message.strip().splitlines()) if kind == "ConfigError" else InputError(message.strip())
    return None
