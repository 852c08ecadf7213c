"""Exceptions of the adoption-rate service.

    AdoptionRateError
     ├── ConfigError        a setting, channel table or mapping file is invalid
     ├── BrokerError        the local Kafka broker cannot be fetched, started or reached
     ├── InputFileError     a replay input file cannot be read or parsed
     └── MappingError       one source row cannot become an event (the replay skips it)
"""


class AdoptionRateError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(AdoptionRateError):
    """A setting, channel classification or mapping file is invalid."""


class BrokerError(AdoptionRateError):
    """The local Kafka broker cannot be fetched, started or reached."""


class InputFileError(AdoptionRateError):
    """A replay input file cannot be read or parsed."""


class MappingError(AdoptionRateError):
    """One source row cannot be converted to an event.

    ``reason`` is a short stable key such as ``"invalid_time"``, by which the
    replay counts skipped rows. The message names the row's value.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
