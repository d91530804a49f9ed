"""What the Kafka membership takes from aiokafka beyond its public package still holds: the
assignor base class and protocol structs at their import paths with the contract our
assignor implements, and the group coordinator's member id and ``request_rejoin``. These
fail loudly when an aiokafka release moves any of it (it is pinned to the tested range)."""

from __future__ import annotations

import inspect

from aiokafka import AIOKafkaConsumer
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.protocol.group import JoinGroupRequest

from bridge.cluster.kafka import (
    ASSIGNOR_NAME,
    coordinator_of,
    decode_claims,
    make_assignor,
    thrown_out,
)


def test_the_assignor_contract_is_the_one_our_assignor_implements() -> None:
    """The base class asks for exactly name, assign, metadata and on_assignment, and our
    assignor class (aiokafka takes classes) is concrete."""
    assert AbstractPartitionAssignor.__abstractmethods__ == frozenset(
        {"name", "assign", "metadata", "on_assignment"}
    )
    assignor = make_assignor("coord", 4, "replica-a", lambda: frozenset({1, 3}))
    assert not inspect.isabstract(assignor)
    assert assignor.name == ASSIGNOR_NAME
    assert list(inspect.signature(AbstractPartitionAssignor.assign).parameters) == [
        "cluster",
        "members",
    ]


def test_join_metadata_and_assignments_survive_the_wire_format() -> None:
    """Our claims ride in the member metadata's user data and the assignment names the
    coordination topic's partitions; both encode and decode with aiokafka's structs."""
    assignor = make_assignor("coord", 4, "replica-a", lambda: frozenset({1, 3}))
    metadata = assignor.metadata({"coord"})
    decoded = ConsumerProtocolMemberMetadata.decode(metadata.encode())
    assert decode_claims(decoded.user_data) == frozenset({1, 3})
    plan = assignor.assign(None, {"m-1": decoded})  # the cluster's metadata is not used
    wire = ConsumerProtocolMemberAssignment.decode(plan["m-1"].encode())
    assert wire.partitions() == [("coord", p) for p in range(4)]


async def test_the_group_coordinator_keeps_what_the_membership_reads() -> None:
    """The consumer keeps its coordinator in ``_coordinator`` (None before start); the
    coordinator has ``request_rejoin`` and resets ``member_id`` to the unknown id (the empty
    string) when the group forgets the member."""
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", group_id="g")
    try:
        assert "_coordinator" in vars(consumer)
        assert coordinator_of(consumer) is None
    finally:
        await consumer.stop()
    assert callable(GroupCoordinator.request_rejoin)
    assert JoinGroupRequest.UNKNOWN_MEMBER_ID == ""
    source = inspect.getsource(GroupCoordinator)
    assert "self.member_id = JoinGroupRequest.UNKNOWN_MEMBER_ID" in source

    class Forgotten:
        member_id = JoinGroupRequest.UNKNOWN_MEMBER_ID

    class Member:
        member_id = "m-1"

    assert thrown_out(Forgotten())
    assert not thrown_out(Member())
    assert not thrown_out(None)
