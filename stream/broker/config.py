"""Files that configure the local Kafka broker: Maven POM, server.properties and log4j2 config.

Every function here is pure text rendering, so it is tested without Java.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

DEFAULT_KAFKA_VERSION = "4.1.1"
# Kafka 4.1 logs through SLF4J 1.7, so the binding is log4j-slf4j-impl (not -slf4j2-impl).
LOG4J_VERSION = "2.24.3"
NODE_ID = 1

_VERSION_PATTERN = re.compile(r"^\d+\.\d+\.\d+$")


@dataclass(frozen=True, slots=True)
class BrokerLayout:
    """Paths and ports of one broker: its home folder, the shared jar cache and its listeners."""

    home: Path
    cache_dir: Path
    port: int
    controller_port: int
    kafka_version: str = DEFAULT_KAFKA_VERSION

    def __post_init__(self) -> None:
        check_kafka_version(self.kafka_version)
        for name, port in (("port", self.port), ("controller port", self.controller_port)):
            if not 1 <= port <= 65535:
                raise ValueError(f"invalid {name} {port}: expected 1 to 65535")
        if self.port == self.controller_port:
            raise ValueError(
                f"invalid controller port {self.controller_port}: it equals the client port; "
                "choose two different ports"
            )

    @property
    def libs_dir(self) -> Path:
        """Folder of the Kafka jars, shared by every home that uses the same cache."""
        return self.cache_dir / f"libs-{self.kafka_version}"

    @property
    def pom_file(self) -> Path:
        return self.cache_dir / f"maven-{self.kafka_version}" / "pom.xml"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def server_log(self) -> Path:
        """Log file written by log4j2 inside the broker."""
        return self.logs_dir / "server.log"

    @property
    def console_log(self) -> Path:
        """Standard output and error of the Java process (JVM errors before log4j2 starts)."""
        return self.logs_dir / "console.log"

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def log4j_file(self) -> Path:
        return self.home / "log4j2.xml"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def state_file(self) -> Path:
        """JSON record of the running broker: pid, ports and Kafka version."""
        return self.home / "broker.json"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"


def check_kafka_version(version: str) -> str:
    """Return ``version`` if it looks like ``4.1.1``, else raise ``ValueError``."""
    if not _VERSION_PATTERN.match(version):
        raise ValueError(
            f"invalid Kafka version {version!r}: expected MAJOR.MINOR.PATCH like "
            f"{DEFAULT_KAFKA_VERSION!r}"
        )
    return version


def _escape_property_value(value: str) -> str:
    """Escape a value for a Java .properties file, where a backslash starts an escape."""
    return value.replace("\\", "\\\\")


def render_server_properties(layout: BrokerLayout) -> str:
    """Render server.properties for one combined broker and controller node on loopback."""
    client = f"PLAINTEXT://127.0.0.1:{layout.port}"
    controller = f"CONTROLLER://127.0.0.1:{layout.controller_port}"
    data_dir = _escape_property_value(str(layout.data_dir))
    lines = [
        "# Written by adoption-rate for a single-node KRaft broker on loopback.",
        "# It is rewritten on every start, so edit LocalBroker instead of this file.",
        "process.roles=broker,controller",
        f"node.id={NODE_ID}",
        f"controller.quorum.voters={NODE_ID}@127.0.0.1:{layout.controller_port}",
        f"listeners={client},{controller}",
        f"advertised.listeners={client},{controller}",
        "inter.broker.listener.name=PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={data_dir}",
        "num.partitions=1",
        "auto.create.topics.enable=true",
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
    ]
    return "\n".join(lines) + "\n"


def render_log4j_config(layout: BrokerLayout) -> str:
    """Render a log4j2 XML config that writes every broker logger to one rolling file."""
    file_name = quoteattr(str(layout.server_log))
    file_pattern = quoteattr(f"{layout.server_log}.%i")
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by adoption-rate on every start of the local broker. -->
<Configuration status="warn">
  <Appenders>
    <RollingFile name="server" fileName={file_name} filePattern={file_pattern}>
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies>
        <SizeBasedTriggeringPolicy size="50 MB"/>
      </Policies>
      <DefaultRolloverStrategy max="4"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="info">
      <AppenderRef ref="server"/>
    </Root>
    <Logger name="kafka.request.logger" level="warn"/>
  </Loggers>
</Configuration>
"""


def render_pom(kafka_version: str) -> str:
    """Render a Maven POM whose dependencies are the Kafka broker and its log4j2 binding."""
    version = escape(check_kafka_version(kafka_version))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by adoption-rate to fetch the jars of a local Kafka broker. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 https://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>adoption-rate.local</groupId>
  <artifactId>local-kafka-broker</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>3.8.1</version>
      </plugin>
    </plugins>
  </build>
</project>
"""
