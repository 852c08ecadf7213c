"""Channel classification: self-service, assisted, excluded or unknown."""

import re
import tomllib
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

from stream.errors import ConfigError

_SEPARATORS = re.compile(r"[\s\-]+")
MAX_CACHED_SPELLINGS = 10_000


class ChannelClass(IntEnum):
    """The side of the adoption rate a channel counts on."""

    SELF_SERVICE = 0
    ASSISTED = 1
    EXCLUDED = 2
    UNCLASSIFIED = 3

    @property
    def label(self) -> str:
        """Return the name used in records and metric labels, such as ``self_service``."""
        return self.name.lower()


def normalize_channel(channel: str) -> str:
    """Lower-case a channel name and turn spaces and hyphens into underscores."""
    return _SEPARATORS.sub("_", channel.strip().lower())


@dataclass(frozen=True)
class ChannelTable:
    """Mapping of normalised channel names to their class."""

    classes: dict[str, ChannelClass]
    _spellings: dict[str, tuple[str, ChannelClass]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def classify(self, channel: str) -> ChannelClass | None:
        """Return the class of a channel, or ``None`` when the table does not list it."""
        found = self.lookup(channel)
        return found[1] if found is not None else None

    def lookup(self, channel: str) -> tuple[str, ChannelClass] | None:
        """Return the normalised name and class of a listed channel, or ``None``.

        Spellings seen before are cached; only listed channels are cached, so
        arbitrary input cannot grow the cache beyond a bound.
        """
        found = self._spellings.get(channel)
        if found is not None:
            return found
        name = normalize_channel(channel)
        channel_class = self.classes.get(name)
        if channel_class is None:
            return None
        if len(self._spellings) < MAX_CACHED_SPELLINGS:
            self._spellings[channel] = (name, channel_class)
        return name, channel_class


def load_channel_table(path: Path) -> ChannelTable:
    """Read a channel table from TOML with ``[self_service]``, ``[assisted]`` and ``[excluded]``."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(
            f"channel table {path} not found: set channels_file to a TOML file"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"channel table {path} cannot be read ({exc}): set channels_file to a UTF-8 TOML file"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"channel table {path} is not valid TOML: {exc}") from exc

    classes: dict[str, ChannelClass] = {}
    sections = {
        "self_service": ChannelClass.SELF_SERVICE,
        "assisted": ChannelClass.ASSISTED,
        "excluded": ChannelClass.EXCLUDED,
    }
    unknown_sections = set(document) - set(sections)
    if unknown_sections:
        raise ConfigError(
            f"channel table {path} has unknown sections {sorted(unknown_sections)}: "
            f"use {sorted(sections)}"
        )
    for section, channel_class in sections.items():
        table = document.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(
                f"channel table {path}: {section} must be a table, like [{section}] with "
                "channels = [...]"
            )
        unknown_keys = set(table) - {"channels"}
        if unknown_keys:
            raise ConfigError(
                f"channel table {path}: [{section}] has unknown keys {sorted(unknown_keys)}: "
                "the only key is channels"
            )
        channels = table.get("channels", [])
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise ConfigError(f"channel table {path}: [{section}] channels must be a list of strings")
        for channel in channels:
            name = normalize_channel(channel)
            previous = classes.get(name)
            if previous is not None and previous != channel_class:
                raise ConfigError(
                    f"channel table {path}: channel {channel!r} is listed as both "
                    f"{previous.label} and {channel_class.label}"
                )
            classes[name] = channel_class
    if not classes:
        raise ConfigError(f"channel table {path} lists no channels")
    return ChannelTable(classes)
