"""The dry loop (bench/loop_dry.py) is deterministic by seed, so two settings can be compared
run against run, and it runs the trainer's step: updates are judged and counted."""

from __future__ import annotations

from bench.loop_dry import parse, run


def test_the_dry_loop_is_deterministic_by_seed() -> None:
    argv = ["--minutes", "0.25", "--warmup-events", "2000", "--users", "100"]
    first, again = run(parse(argv)), run(parse(argv))
    assert first["promotions"] + sum(first["rejections"].values()) >= 2  # updates ran
    ctr = first["expected_ctr"]  # the oracle shows each request's true top 5: no arm beats it
    assert ctr["oracle"] >= max(ctr["static"], ctr["incremental"])
    assert first["gap_closed"] <= 1.0
    for got in (first, again):
        got.pop("update_seconds_p50")  # wall time
    assert first == again
    other = run(parse([*argv, "--seed", "8"]))
    assert other["expected_ctr"] != first["expected_ctr"]
    calm = run(parse([*argv, "--world", '{"trend_gain": 0.0}']))  # the world's rules apply
    assert calm["expected_ctr"]["oracle"] != first["expected_ctr"]["oracle"]
