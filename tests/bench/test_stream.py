"""bench.stream: a short real run (real broker, real Feast) gives the issue's figures,
with nothing lost or duplicated, on SQLite and on Redis (there also with two processes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.stream import run
from infra.stack import redis_up


@pytest.mark.integration
@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_a_short_run_reports_the_figures_and_loses_nothing(broker: str, tmp_path: Path,
                                                           store: str) -> None:
    online: dict[str, Any] = {"online_store": store}
    if store == "redis":
        if not redis_up():
            pytest.skip("no Redis server on 127.0.0.1:6379")
        online["redis_connection_string"] = "127.0.0.1:6379"
    processes = 2 if store == "redis" else 0  # several processes: the production store
    users = 500 if store == "redis" else 3000  # SQLite: most users new, a row per event
    out = run(broker, tmp_path, n=600, rate=400.0, live_n=1200, window_s=1.0, online=online,
              processes=processes, max_poll_records=200, users=users)
    assert out["users"] == users
    assert out["lost"] == 0 and out["duplicated"] == 0
    assert len(out["checks"]) == (3 if processes else 2)
    if processes:
        scale = out["scale_out"]
        assert scale["pipeline_eps"] > 0 and len(scale["events_by_process"]) == processes
        owned = sorted(p for parts in scale["assignment"].values() for p in parts)
        assert owned == [0, 1, 2, 3]  # the group split the partitions between the processes
    for phase in out["checks"].values():
        assert phase["samples_emitted"] == phase["samples_expected"] > 0
        assert phase["samples_wrong"] == 0
    assert out["raw_consume_eps"] > 0 and out["pipeline_eps"] > 0
    assert out["ratio"] == round(out["pipeline_eps"] / out["raw_consume_eps"], 3)
    phases = out["phases_us_per_event"]  # batches of 200: several after the first
    assert phases["poll"] > 0 and phases["validate"] > 0 and phases["feast_write"] > 0
    anchor_us = 1e6 / out["raw_consume_eps"]
    assert out["ratio_ceiling"] == round(anchor_us / (anchor_us + phases["feast_write"]), 3)
    assert out["freshness_clicks"] > 0
    assert 0 < out["freshness_p50_ms"] <= out["freshness_p99_ms"] <= out["freshness_max_ms"]
    assert out["machine"]["online_store"] == store
