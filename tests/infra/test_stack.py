"""`recstream stack up|status|down` against the real broker and Feast (Ray left out here:
`ray stop` is machine-wide; the end-to-end test runs its own Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from features.store import FeastConfig
from infra import stack

pytestmark = pytest.mark.integration


def test_up_creates_topics_and_feast_repo_then_down_stops(tmp_path: Path,
                                                           free_tcp_port: int) -> None:
    s = stack.StackSettings(data_dir=tmp_path, kafka_port=free_tcp_port, partitions=3,
                            feast=FeastConfig(data_dir=tmp_path / "feast"))
    lines: list[str] = []
    try:
        stack.up(s, ray=False, log=lines.append)
        st = stack.status(s)
        assert st.kafka and st.feast
        admin = KafkaAdminClient(**s.kafka().common())
        try:
            topics = set(admin.list_topics())
            assert {"events", "events.dlq", "samples", "predictions"} <= topics
        finally:
            admin.close()
        stack.up(s, ray=False, log=lines.append)  # idempotent: a second up is harmless
        assert any("already there" in line for line in lines)
    finally:
        stack.down(s, log=lines.append)
    assert not stack.status(s).kafka
    assert not s.broker_pidfile.exists()


def test_a_taken_port_is_a_clear_error(tmp_path: Path, broker: str) -> None:
    port = int(broker.rsplit(":", 1)[1])
    with pytest.raises(stack.StackError, match=r"kafka: port \d+ is already taken"):
        stack.start_broker(port, tmp_path / "tansu.log")
