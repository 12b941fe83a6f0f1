"""The errors that mean bad input: the ``qco-tune`` command shows them as one line and exits with status 2.

A ``ValueError`` that is not an ``InputError`` comes from a bug (qco-tune's or a library's) and is
reported as unexpected, with its type, so that it is not mistaken for a mistake of the user's.
"""

from __future__ import annotations


class InputError(ValueError):
    """Input that qco-tune cannot use as given (a flag, a spec, a name, a file's content); the message is
    one line and says what is wrong."""
