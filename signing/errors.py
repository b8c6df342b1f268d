"""The small exception tree of the signing package.

Each error carries a message written for the person who will read it; the
CLI and the HTTP API print that message, never a traceback.
"""


class RogatoryError(Exception):
    """Base of every error Rogatory raises on purpose."""


class InputError(RogatoryError):
    """Input from outside was refused before any signature was looked at."""


class XMLInputError(InputError):
    """An XML document is malformed, hostile or beyond the parser's bounds."""


class SigningError(RogatoryError):
    """A document could not be signed (bad key, unreachable TSA, bad input)."""


class TrustConfigError(RogatoryError):
    """Trust anchors or the validation policy are unusable."""
