"""The error every bad setting raises, apart from the loader so the modules that check a setting
(the storage URI parser, the loader itself) share it without importing each other."""


class SettingError(ValueError):
    """A setting (an environment variable) cannot be used; the message names it and says what it accepts,
    on one line."""
