"""A three-node KRaft cluster on loopback (combined broker+controller nodes, RF 3,
min.insync.replicas 2, no automatic topic creation), and the admin calls the soak needs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from soak.procs import Proc, free_port, port_open

JVM = ["-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1"]
TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime", "min.insync.replicas": "2"}
LOG4J = """status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.file.ref = FILE
"""


def node_properties(node: int, port: int, voters: str, controller: int, data: Path) -> str:
    return f"""process.roles=broker,controller
node.id={node}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=2
default.replication.factor=3
min.insync.replicas=2
auto.create.topics.enable=false
unclean.leader.election.enable=false
offsets.topic.replication.factor=3
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=9223372036854775807
num.network.threads=2
num.io.threads=2
background.threads=2
"""


@dataclass
class KafkaCluster:
    libs: Path
    root: Path
    nodes: dict[int, Proc] = field(default_factory=dict)
    ports: dict[int, int] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports.values())

    def java(self, node: int, main: str, *args: str) -> list[str]:
        log4j = self.root / f"node{node}" / "log4j2.properties"
        return [
            "java",
            *JVM,
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def configure(self) -> None:
        controllers = {n: free_port() for n in (1, 2, 3)}
        self.ports = {n: free_port() for n in (1, 2, 3)}
        voters = ",".join(f"{n}@127.0.0.1:{c}" for n, c in controllers.items())
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        for n in (1, 2, 3):
            folder = self.root / f"node{n}"
            folder.mkdir(parents=True, exist_ok=True)
            props = folder / "server.properties"
            props.write_text(
                node_properties(n, self.ports[n], voters, controllers[n], folder / "data")
            )
            (folder / "log4j2.properties").write_text(LOG4J.format(log=folder / "broker.log"))
            subprocess.run(
                self.java(
                    n,
                    "kafka.tools.StorageTool",
                    "format",
                    f"--cluster-id={cluster_id}",
                    "-c",
                    str(props),
                ),
                check=True,
                capture_output=True,
                timeout=120,
            )
            self.nodes[n] = Proc(
                f"kafka-{n}", self.java(n, "kafka.Kafka", str(props)), folder / "stdout.log"
            )

    def start_node(self, node: int) -> None:
        if not self.nodes[node].alive():
            self.nodes[node].start()

    async def start(self, within: float = 180.0) -> None:
        for n in self.nodes:
            self.start_node(n)
        await self.wait_ready(within)

    async def wait_ready(self, within: float) -> None:
        """Until every node listens and the cluster names three brokers."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            dead = [p.name for p in self.nodes.values() if not p.alive()]
            if dead:
                raise RuntimeError(f"kafka nodes exited during start-up: {dead}")
            if all(port_open(p) for p in self.ports.values()) and await self.broker_count() == 3:
                return
            await asyncio.sleep(1)
        raise RuntimeError(f"the kafka cluster was not up within {within:.0f} s")

    async def admin(self) -> AIOKafkaAdminClient:
        client = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10000)
        await client.start()
        return client

    async def broker_count(self) -> int:
        try:
            client = await self.admin()
        except Exception:  # noqa: BLE001 - not up yet
            return 0
        try:
            cluster: Any = await client.describe_cluster()
            return len(cluster.get("brokers", []))
        except Exception:  # noqa: BLE001
            return 0
        finally:
            await client.close()

    async def create_topics(self, names: list[str], partitions: int = 2) -> None:
        """Create ``names`` (RF 3, LogAppendTime); retries while a deleted one lingers."""
        client = await self.admin()
        try:
            deadline = time.monotonic() + 60
            missing = list(names)
            while missing:
                existing = set(await client.list_topics())
                missing = [n for n in missing if n not in existing]
                if not missing:
                    return
                topics = [NewTopic(n, partitions, 3, topic_configs=TOPIC_CONFIG) for n in missing]
                with contextlib.suppress(Exception):
                    await client.create_topics(topics, timeout_ms=20000)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"could not create topics {missing}")
                await asyncio.sleep(1)
        finally:
            await client.close()

    async def delete_topics(self, names: list[str]) -> None:
        client = await self.admin()
        try:
            await client.delete_topics(names, timeout_ms=20000)
        finally:
            await client.close()

    async def leaders(self, topics: list[str]) -> dict[int, int]:
        """How many partitions of ``topics`` each broker leads now."""
        client = await self.admin()
        counts = dict.fromkeys(self.nodes, 0)
        try:
            described: Any = await client.describe_topics(topics)
            for topic in described:
                for partition in topic.get("partitions", []):
                    leader = partition.get("leader", -1)
                    if leader in counts:
                        counts[leader] += 1
        finally:
            await client.close()
        return counts

    async def stop(self) -> None:
        """All nodes at once (one by one, the last waits for a quorum that is gone)."""
        await asyncio.gather(*(proc.stop(grace=10) for proc in self.nodes.values()))
