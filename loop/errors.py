"""The project's own errors. Each says what was expected, what was found and how to fix it."""

from __future__ import annotations


class AlloopError(Exception):
    """Base of every error the project raises on purpose.

    ``str(err)`` is one line meant for a person: ``what`` (expected vs found) and ``fix``.
    """

    def __init__(self, what: str, fix: str | None = None) -> None:
        self.what = what
        self.fix = fix
        super().__init__(f"{what} Fix: {fix}" if fix else what)


class ConfigError(AlloopError):
    """A setting or option has a value that cannot work."""


class DataError(AlloopError):
    """Input data (a file, a dataset, a record) is malformed."""


class StoreError(AlloopError):
    """The state store cannot do what was asked (schema, connection, integrity)."""


class ModelError(AlloopError):
    """Training, loading or using a model failed."""


class StrategyError(AlloopError):
    """A query strategy got input it cannot score (shape, NaN, unknown name)."""


class LabelingToolError(AlloopError):
    """The labeling tool (Label Studio) refused a request or is unreachable."""
