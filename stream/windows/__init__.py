"""Event-time windows: window arithmetic, slices, clocks and de-duplication."""
