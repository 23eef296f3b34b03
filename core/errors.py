"""Base exceptions shared by every package."""


class AnxinError(Exception):
    """Base of every error Anxin raises on purpose."""


class ConfigError(AnxinError):
    """A setting is missing or has a value that is not valid."""


class DatabaseError(AnxinError):
    """The database is unreachable or its schema is not what this code expects."""
