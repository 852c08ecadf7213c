"""Live self-service adoption rate of customer-support interactions."""

__version__ = "0.1.0"
