"""Find Java and fetch the Kafka broker jars from Maven Central with Maven."""

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from stream.broker.config import BrokerLayout, render_pom
from stream.errors import BrokerError

logger = logging.getLogger(__name__)

MIN_JAVA_MAJOR = 17  # Kafka 4.0 and later brokers need Java 17.
FETCH_TIMEOUT_SECONDS = 900.0
_JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


def find_java() -> str:
    """Return the path of ``java`` on PATH after checking that it is Java 17 or newer."""
    java = shutil.which("java")
    if java is None:
        raise BrokerError(
            "java not found on PATH: the local Kafka broker needs Java "
            f"{MIN_JAVA_MAJOR} or newer; install it, on Debian with "
            "'apt-get install openjdk-17-jre-headless'"
        )
    try:
        result = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"failed to run '{java} -version': {exc}") from exc
    output = result.stderr + result.stdout
    major = parse_java_major(output)
    if major is None or major < MIN_JAVA_MAJOR:
        first_line = output.strip().splitlines()[0] if output.strip() else "no output"
        raise BrokerError(
            f"{java} is not Java {MIN_JAVA_MAJOR} or newer ({first_line}); install "
            "openjdk-17-jre-headless (Debian) or put a newer java first on PATH"
        )
    return java


def parse_java_major(version_output: str) -> int | None:
    """Return the major version from ``java -version`` output: 17 for "17.0.15", 8 for "1.8.0"."""
    match = _JAVA_VERSION.search(version_output)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:
        return int(match.group(2))
    return major


def ensure_jars(layout: BrokerLayout) -> Path:
    """Fetch the Kafka jars into ``layout.libs_dir`` unless they are there, and return that folder.

    Maven writes into a temporary sibling folder that is renamed at the end,
    so an interrupted fetch never leaves a half-filled ``libs_dir`` behind,
    and two processes fetching at once both end with a complete folder.
    """
    libs_dir = layout.libs_dir
    if libs_dir.is_dir():
        return libs_dir

    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            f"mvn not found on PATH: fetching Kafka {layout.kafka_version} into {libs_dir} needs "
            "Maven; install it, on Debian with 'apt-get install maven'"
        )

    layout.pom_file.parent.mkdir(parents=True, exist_ok=True)
    layout.pom_file.write_text(render_pom(layout.kafka_version))
    partial_dir = libs_dir.with_name(f"{libs_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(partial_dir, ignore_errors=True)
    command = [
        mvn,
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(layout.pom_file),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={partial_dir}",
    ]
    logger.info("fetching Kafka %s jars with Maven into %s", layout.kafka_version, libs_dir)
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=FETCH_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(partial_dir, ignore_errors=True)
        raise BrokerError(
            f"Maven timed out after {FETCH_TIMEOUT_SECONDS:.0f} s fetching Kafka "
            f"{layout.kafka_version}; check access to Maven Central and run again"
        ) from exc

    if result.returncode != 0:
        shutil.rmtree(partial_dir, ignore_errors=True)
        output = (result.stdout + result.stderr).strip().splitlines()
        last_lines = "\n".join(output[-20:]) or "(no output)"
        raise BrokerError(
            f"Maven failed (exit code {result.returncode}) to fetch Kafka "
            f"{layout.kafka_version} with {layout.pom_file}; check the version and access to "
            f"Maven Central. Last lines of its output:\n{last_lines}"
        )

    if not any(partial_dir.glob("*.jar")):
        shutil.rmtree(partial_dir, ignore_errors=True)
        raise BrokerError(
            f"Maven exited 0 but wrote no jars into {partial_dir}; run "
            f"'{' '.join(command)}' by hand to see why"
        )

    try:
        partial_dir.rename(libs_dir)
    except OSError:
        # Another process finished the same fetch first, and its folder is complete.
        if not libs_dir.is_dir():
            raise
        shutil.rmtree(partial_dir, ignore_errors=True)
    jar_count = len(list(libs_dir.glob("*.jar")))
    logger.info("fetched %d jars of Kafka %s into %s", jar_count, layout.kafka_version, libs_dir)
    return libs_dir
