"""Half-open event-time windows ``[start, end)`` in epoch milliseconds.

A window spec has a size and a step. Windows start at every multiple of the
step (counted from the epoch) and last ``size`` milliseconds, so an instant
lies in ``size / step`` windows when the step divides the size.
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """A rolling window: its name (``"1h"``), size and step in milliseconds."""

    name: str
    size_ms: int
    step_ms: int

    def __post_init__(self) -> None:
        if self.size_ms <= 0 or self.step_ms <= 0:
            raise ValueError(f"invalid window {self.name!r}: size and step must be positive")
        if self.step_ms > self.size_ms:
            raise ValueError(
                f"invalid window {self.name!r}: step {self.step_ms} ms exceeds size "
                f"{self.size_ms} ms, which would leave gaps between windows"
            )
        if self.size_ms % self.step_ms:
            raise ValueError(
                f"invalid window {self.name!r}: size {self.size_ms} ms is not a multiple "
                f"of step {self.step_ms} ms"
            )


def floor_to(epoch_ms: int, length_ms: int) -> int:
    """Round an instant down to a multiple of ``length_ms`` (also before 1970)."""
    return epoch_ms - epoch_ms % length_ms


def window_ends(spec: WindowSpec, epoch_ms: int) -> range:
    """Return the ends of every window of ``spec`` that contains the instant."""
    first_end = floor_to(epoch_ms, spec.step_ms) + spec.step_ms
    return range(first_end, first_end + spec.size_ms, spec.step_ms)


def windows_of_slice(spec: WindowSpec, slice_start_ms: int, slice_ms: int) -> range:
    """Return the ends of every window that contains the slice ``[start, start + slice_ms)``.

    The slice length divides the step, so a slice lies wholly inside or
    wholly outside each window.
    """
    return window_ends(spec, slice_start_ms)


def slices_of_window(end_ms: int, spec: WindowSpec, slice_ms: int) -> range:
    """Return the starts of the slices that make up the window ending at ``end_ms``."""
    return range(end_ms - spec.size_ms, end_ms, slice_ms)
