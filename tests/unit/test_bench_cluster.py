"""The cluster-scale benchmark's and the fleet peer's pure parts: connect rates, loss by id,
the peer's config."""

from __future__ import annotations

from bench.cluster_parts import Sample, delta, frame_id, merged_stats, peak_rate, sample_of
from bench.cluster_scale import edge_tag, edges_needed, loss
from bench.peers.fleet import fleet_config


def sample(at: float, upgrades: int, limited: int = 0) -> Sample:
    return Sample(at, upgrades, 0, 0, limited, 0, 0)


def test_peak_rate_is_the_highest_over_windows_of_a_second_or_more() -> None:
    """Upgrades per second: the busiest window of at least a second inside the phase; the
    samples outside it do not count."""
    samples = [sample(0, 0), sample(1, 10), sample(2, 50), sample(3, 55), sample(10, 1000)]
    assert peak_rate(samples, 0, 3) == 40.0
    assert delta(samples, 0, 3, "upgrades") == 55
    assert delta(samples, 5, 6, "upgrades") == 0


def test_loss_counts_apart_only_frames_written_to_the_killed_replicas_sockets() -> None:
    """A frame of a killed replica's instance sent before its instances had new sockets is
    counted apart (before or after the kill); any other missing frame is a loss; duplicates
    are counted, records without an id (gap markers) apart."""
    sent = {
        "a": [("a-1", 99.0), ("a-2", 100.5), ("a-3", 130.0)],
        "b": [("b-1", 100.5), ("b-2", 101.0)],
    }
    seen = {"a-3": 2, "b-1": 1, "": 4}
    found = loss(sent, seen, {"a"}, (100.0, 110.0))
    assert found["sent"] == 5
    assert found["missing"] == 3
    assert found["missing_to_killed_sockets"] == 2
    assert found["of_those_after_the_kill"] == 1
    assert found["missing_otherwise"] == 1  # b-2: a survivor's frame
    assert found["duplicates"] == 1  # gap markers (no id) are not duplicates
    assert found["without_id"] == 4


def test_frame_id_reads_the_published_value() -> None:
    """The simulator's id is data.id of the frame as published; anything else has none."""
    assert frame_id(b'{"event":"x","data":{"id":"inst-001-000000007"}}') == "inst-001-000000007"
    assert frame_id(b"not json") == ""
    assert frame_id(None) == ""


def test_the_fleet_peer_has_one_websocket_input_per_instance_with_its_own_token() -> None:
    """The Benthos peer's config: N websocket inputs under one broker input, each with its
    instance's token, into the franz-go output."""
    config = fleet_config("http://127.0.0.1:1", 3, "127.0.0.1:9092", "t")
    urls = [i["websocket"]["url"] for i in config["input"]["broker"]["inputs"]]
    assert urls == [f"ws://127.0.0.1:1/ws/inst-{n:03d}?token=tok-{n:03d}" for n in range(3)]
    assert config["output"]["franz_peer"]["topic"] == "t"


def test_simulators_side_by_side_count_as_one_upstream() -> None:
    """Two simulators' stats merge instance by instance: a socket on each is two sockets (a
    doubled instance), upgrades, frames and 429s add up; one simulator's answer is its own."""
    one = {
        "instances": {
            "a": {"upgrades": 2, "open_sockets": 1, "frames_sent": 5, "unheard": 0},
            "b": {"upgrades": 1, "open_sockets": 0, "frames_sent": 1, "unheard": 1},
        },
        "rate_limited": 1,
    }
    two = {
        "instances": {
            "a": {"upgrades": 1, "open_sockets": 1, "frames_sent": 3, "unheard": 0},
            "b": {"upgrades": 3, "open_sockets": 1, "frames_sent": 4, "unheard": 0},
        },
        "rate_limited": 2,
    }
    found = sample_of(0.0, merged_stats([one, two]))
    assert (found.upgrades, found.connected, found.doubled) == (7, 2, 1)
    assert (found.sent, found.unheard, found.rate_limited) == (13, 1, 3)
    assert merged_stats([one]) is one


def test_one_simulator_while_its_open_files_hold_the_fleet() -> None:
    """One simulator serves every instance while its open-files limit holds them twice over
    (a take-over's sockets), else one per replica, each tagging its frame ids apart."""
    assert edges_needed(2000, 4, 20_000) == 1
    assert edges_needed(20_000, 4, 20_000) == 4
    assert edges_needed(20_000, 4, 30_000) == 2
    assert edges_needed(10_000, 3, 12_000) == 3
    assert edge_tag(0, 1) == ""
    assert {edge_tag(k, 4) for k in range(4)} == {"e0-", "e1-", "e2-", "e3-"}


def test_a_simulators_tag_is_in_every_frame_id() -> None:
    """Frame ids carry the simulator's tag after the instance, so simulators side by side never
    send two frames with one id."""
    from bridge.simulator.frames import FrameFactory  # noqa: PLC0415

    assert FrameFactory("i", "t", "http://x", id_tag="e1-").build()[0] == "i-e1-000000001"
    assert FrameFactory("i", "t", "http://x").build()[0] == "i-000000001"
