"""The one error ``strategies`` raises on purpose.

``strategies`` imports nothing of the project, so it defines its own error. It subclasses
``ValueError`` so a caller that knows nothing of this package can still catch it.
"""

from __future__ import annotations


class StrategyInputError(ValueError):
    """A strategy got input it cannot use (shape, dtype, NaN, rows not summing to 1, name).

    ``str(err)`` is one line: what was checked, what was expected, what was found, and the fix.
    """

    def __init__(self, what: str, *, expected: str, found: str, fix: str) -> None:
        self.what = what
        self.expected = expected
        self.found = found
        self.fix = fix
        super().__init__(f"{what}: expected {expected}, found {found}. Fix: {fix}")
