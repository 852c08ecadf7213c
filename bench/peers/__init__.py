"""The peer contenders, each run as ``python -m bench.peers.<name>`` in its own process."""
