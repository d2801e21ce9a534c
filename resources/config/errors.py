"""The errors of a setting or an environment that cannot be used, apart from the modules that raise them
(the settings loader, the storage URI parser, the object-store client) so those share them without
importing each other. The CLI ends any command on either with one line and exit 2."""


class SettingError(ValueError):
    """A setting (an environment variable) cannot be used; the message names it and says what it accepts,
    on one line."""


class StorageUnavailable(RuntimeError):
    """The bucket a URI names cannot be reached or used (no such bucket, access refused, endpoint down);
    the message says which, and which settings to check."""
