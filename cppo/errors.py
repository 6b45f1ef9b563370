"""The error every configuration check raises, in a module of its own.

Why alone: both :mod:`cppo.config` (which calls the schema check) and :mod:`cppo.schema` (which
raises it) need it; defined in either, the two would import each other.
"""


class ConfigError(ValueError):
    """A config value is wrong; the message names the key and what is allowed."""
