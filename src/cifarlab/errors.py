"""The one base class of the errors a user can fix.

Every module's own error class derives from CifarlabError, and the command line
prints any of them as one line (`cifarlab VERB: error: MESSAGE`, exit status 2)
instead of a traceback. The message names the key, file or folder at fault and says
what to do about it.
"""
from __future__ import annotations


class CifarlabError(Exception):
    """A mistake in a setting, a file or a folder, explained in one line."""


class UsageError(CifarlabError):
    """A mistake in the command line (an option, an argument), printed without a traceback."""
