"""The incremental trainer killed (SIGKILL) at random points and restarted: every samples
record feeds exactly one update (a published version or a recorded rejection), none is
skipped or counted twice, and the live pointer always names a complete version."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from models.registry import Registry
from stream.kafka import KafkaConfig

from .conftest import (
    as_samples,
    assert_each_record_once,
    bootstrap,
    covered,
    produce_samples,
    train_settings_for,
)

ROOT = Path(__file__).resolve().parents[2]


def _env(kafka: KafkaConfig, registry: str) -> dict[str, str]:
    return {**os.environ, "TRAIN_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "TRAIN_KAFKA__TOPICS__SAMPLES": kafka.topics.samples,
            "TRAIN_REGISTRY_ROOT": registry, "TRAIN_FAMILY": "din", "TRAIN_ARCH": "din",
            "TRAIN_MAX_HISTORY": "20", "TRAIN_GROUP_ID": "train-kill", "TRAIN_INTERVAL_S": "0.1",
            "TRAIN_MIN_NEW_SAMPLES": "200", "TRAIN_MAX_NEW_SAMPLES": "300",
            "TRAIN_BUFFER_SAMPLES": "1000", "TRAIN_METRICS_PORT": "0",
            "TRAIN_GUARD__MIN_EVAL_SAMPLES": "50"}


def _outcomes(reg: Registry) -> int:
    return len(reg.versions("din")) + len(reg.rejections("din"))


def _wait(check, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"trainer exited with {proc.returncode}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_killed_trainer_resumes_without_losing_or_repeating_a_record(
        world: pd.DataFrame, kafka_cfg: KafkaConfig, tmp_path: Path) -> None:
    s = train_settings_for(tmp_path, kafka_cfg)
    bootstrap(world, s)
    reg = Registry(s.registry_root)
    records = produce_samples(kafka_cfg, as_samples(world, 3000, 6000))
    env = _env(kafka_cfg, s.registry_root)
    rng = random.Random(7)
    kills = 0

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "train.incremental"], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def done() -> bool:
        return sum(hi - lo for _, lo, hi in covered(reg, "din")) >= records

    while kills < 4 and not done():
        proc = start()
        try:
            seen = _outcomes(reg)
            _wait(lambda seen=seen: _outcomes(reg) > seen or done(), 120, proc)
            time.sleep(rng.uniform(0.0, 0.25))  # into the next update, its publish or commit
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        kills += 1
        assert reg.pointer("din") in {m["version"] for m in reg.versions("din")}
    proc = start()
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"training din")  # handlers installed
        _wait(done, 180, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert kills >= 2  # (up to 4: the stream may be done before)
    assert_each_record_once(reg, "din", records, kafka_cfg.partitions)
    assert reg.pointer("din") in {m["version"] for m in reg.versions("din")}
