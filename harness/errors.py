"""The one exception type for mistakes a user can fix, printed as one line by the CLI."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (a name, a path, a config) that they can fix.

    The CLI prints the message as one red line and exits with status 2, with no traceback,
    so the message must name the file, line or plugin at fault and say what to do.
    """


class UnknownNameError(UserError, KeyError):
    """A backbone, data set or protocol name that no plugin registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateSpecError(UserError):
    """Two plugins registered a spec under the same name."""


class UnsupportedFeatureKind(ValueError):
    """A protocol asked for a feature kind the backbone does not offer (e.g. ``cls`` of a CNN)."""
