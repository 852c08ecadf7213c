"""Operating-system helpers for the local broker: processes, pid files and loopback ports."""

import errno
import os
import socket
from collections import deque
from pathlib import Path

PROC = Path("/proc")


def is_alive(pid: int) -> bool:
    """Return whether ``pid`` is a live process. A zombie (exited, not yet reaped) is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat_file = PROC / str(pid) / "stat"
    try:
        stat = stat_file.read_text()
    except OSError:
        return True
    # The state letter follows the command name, which is in brackets and may contain spaces.
    state = stat.rpartition(")")[2].split()[:1]
    return state != ["Z"]


def command_line(pid: int) -> str | None:
    """Return the command line of ``pid`` joined by spaces, or None where /proc is missing."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def read_pid(pid_file: Path) -> int | None:
    """Return the pid stored in ``pid_file``, or None if the file is missing or invalid."""
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Return whether binding ``host:port`` fails because another socket is bound to it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # The JVM sets SO_REUSEADDR as well, so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def port_accepts(port: int, host: str = "127.0.0.1", timeout_seconds: float = 1.0) -> bool:
    """Return whether a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_seconds):
            return True
    except OSError:
        return False


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return ``count`` distinct TCP ports that are free now. Others may take them later."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def file_size(path: Path) -> int:
    """Return the size of ``path`` in bytes, or 0 if it does not exist."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def tail(path: Path, lines: int = 20, start_offset: int = 0, max_line_chars: int = 500) -> str:
    """Return the last ``lines`` lines of a text file after byte ``start_offset``.

    Lines longer than ``max_line_chars`` are cut, and a missing file or an
    empty range yields a short note instead.
    """
    try:
        with path.open("rb") as handle:
            if start_offset <= file_size(path):
                handle.seek(start_offset)
            raw_lines = deque(handle, maxlen=lines)
    except FileNotFoundError:
        return f"({path} does not exist)"
    if not raw_lines:
        return "(nothing written)"
    cut_lines = []
    for raw in raw_lines:
        line = raw.decode(errors="replace").rstrip()
        if len(line) > max_line_chars:
            line = line[:max_line_chars] + " [...]"
        cut_lines.append(line)
    return "\n".join(cut_lines)
