"""The one kind of error a user is shown as a message instead of a traceback.

Every stage raises a subclass of `UserError` for a mistake the user can fix (a wrong flag, a
missing or malformed file, an artefact made for another run); `trimodal.cli.main` catches it
in one place and prints `trimodal <stage>: error: <message>`. Anything else is a bug and keeps
its traceback. The subclasses (ConfigError here; VocabError, ShardError, CheckpointError,
SamplingError, CorpusError beside their code) exist so that library callers can catch one
family, and they keep ValueError/RuntimeError as a second base so that older callers that
caught those still do.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; the message names the argument or file and what is wrong."""


class ConfigError(UserError, ValueError):
    """A config value or file is wrong; the message names the field and the problem."""
