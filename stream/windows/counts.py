"""Interaction counts of one slice or one window."""

from collections.abc import Iterable
from dataclasses import dataclass, field

from stream.ingest.channels import ChannelClass

# A slice maps (channel class, channel) to a count. Resolved interactions are
# counted a second time under (RESOLVED_BASE + class, "").
SliceKey = tuple[int, str]
SliceCounts = dict[SliceKey, int]
RESOLVED_BASE = 10

_SELF = int(ChannelClass.SELF_SERVICE)
_ASSISTED = int(ChannelClass.ASSISTED)
_EXCLUDED = int(ChannelClass.EXCLUDED)
_UNCLASSIFIED = int(ChannelClass.UNCLASSIFIED)
_SELF_RESOLVED = RESOLVED_BASE + _SELF
_ASSISTED_RESOLVED = RESOLVED_BASE + _ASSISTED


@dataclass(slots=True)
class WindowCounts:
    """Sums over the slices of one window."""

    self_service: int = 0
    assisted: int = 0
    excluded: int = 0
    unclassified: int = 0
    self_service_resolved: int = 0
    assisted_resolved: int = 0
    channels: dict[str, int] = field(default_factory=dict)
    channel_classes: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Return the self-service plus assisted interactions: the rate's denominator."""
        return self.self_service + self.assisted

    @property
    def rate(self) -> float | None:
        """Return self-service / total, or ``None`` when the window contains no interaction."""
        total = self.total
        return self.self_service / total if total else None

    @property
    def is_empty(self) -> bool:
        """Tell whether no event at all, counted or excluded, fell in the window."""
        return not (self.total or self.excluded or self.unclassified)

    @classmethod
    def from_totals(cls, totals: SliceCounts) -> "WindowCounts":
        """Return the sums of a window from its slices added up, newest slice's keys first.

        A channel counted under two classes in the window, as when the
        channel table changed, is labelled with the class of its newest slice.
        """
        window = cls()
        window._add(reversed(totals.items()))
        return window

    def add_slice(self, counts: SliceCounts) -> None:
        """Add one slice's counts."""
        self._add(counts.items())

    def _add(self, items: Iterable[tuple[SliceKey, int]]) -> None:
        channels = self.channels
        channel_classes = self.channel_classes
        for (channel_class, channel), number in items:
            if channel_class == _SELF:
                self.self_service += number
            elif channel_class == _ASSISTED:
                self.assisted += number
            elif channel_class == _EXCLUDED:
                self.excluded += number
            elif channel_class == _UNCLASSIFIED:
                self.unclassified += number
            elif channel_class == _SELF_RESOLVED:
                self.self_service_resolved += number
                continue
            elif channel_class == _ASSISTED_RESOLVED:
                self.assisted_resolved += number
                continue
            else:
                continue
            channels[channel] = channels.get(channel, 0) + number
            channel_classes[channel] = channel_class

    def add(self, other: "WindowCounts") -> None:
        """Add another window's sums, as when folding tenants together."""
        self.self_service += other.self_service
        self.assisted += other.assisted
        self.excluded += other.excluded
        self.unclassified += other.unclassified
        self.self_service_resolved += other.self_service_resolved
        self.assisted_resolved += other.assisted_resolved
        for channel, number in other.channels.items():
            self.channels[channel] = self.channels.get(channel, 0) + number
            self.channel_classes[channel] = other.channel_classes[channel]

    def as_slice(self) -> SliceCounts:
        """Return the sums in slice form, so they travel and add up like a slice."""
        counts: SliceCounts = {
            (self.channel_classes[channel], channel): number
            for channel, number in self.channels.items()
        }
        if self.self_service_resolved:
            counts[(RESOLVED_BASE + _SELF, "")] = self.self_service_resolved
        if self.assisted_resolved:
            counts[(RESOLVED_BASE + _ASSISTED, "")] = self.assisted_resolved
        return counts


def add_counts(target: SliceCounts, counts: SliceCounts) -> None:
    """Add slice-form counts into ``target``."""
    for key, number in counts.items():
        target[key] = target.get(key, 0) + number


def subtract_counts(target: SliceCounts, counts: SliceCounts) -> None:
    """Take slice-form counts out of ``target``, dropping the keys that reach zero."""
    for key, number in counts.items():
        left = target[key] - number
        if left:
            target[key] = left
        else:
            del target[key]
