"""The README's "Using it" block as a tested contract, run as a user runs it.

Each line of the block's first fenced ``bash`` is a process of its own, in order, started
in a fresh directory (``.venv`` linked to this checkout's) with the ports moved to free ones
through the ``STACK_*`` / ``STREAM_*`` / ``SERVE_*`` variables the README documents: ``stack
up`` returns, ``stream run &`` in the background, the kafka-python script of docs/events.md
(not recstream's helpers) where the block's comment names it, ``dlq`` shows the three
reasons, ``train``, ``serve &``, the ``curl`` (``history_length`` equals the clicks sent),
``stack down --all``. The other block's lines must parse with the CLI. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import requests

from infra import stack
from infra.cli import build_parser
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.integration

USER, CLICKS = 42, 6  # what docs/events.md's script sends (asserted against the README)
REASONS = ("not_json", "future_ts", "invalid_field")
WALK = ["stack up", "stream run &", "docs/events.md", "dlq", "train", "serve &", "curl",
        "stack down"]


def bash_blocks(markdown: str, heading: str) -> list[str]:
    """The fenced ``bash`` blocks of the section under ``heading``."""
    section = markdown.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


def python_block(markdown: str) -> str:
    """The (only) fenced ``python`` block of a document."""
    (code,) = re.findall(r"```python\n(.*?)```", markdown, flags=re.S)
    return str(code)


@dataclass
class Step:
    """One line of the block: ``argv`` (with a trailing ``&``: ``background``), or a comment
    line (``argv`` empty, ``note`` its text)."""

    argv: list[str] = field(default_factory=list)
    background: bool = False
    note: str = ""

    @property
    def label(self) -> str:
        if not self.argv:
            return "docs/events.md" if "docs/events.md" in self.note else "comment"
        if Path(self.argv[0]).name != "recstream":
            return Path(self.argv[0]).name
        words = [a for a in self.argv[1:] if not a.startswith("-")]
        n = 2 if words[:1] == ["stack"] or words[:2] == ["stream", "run"] else 1
        return " ".join(words[:n]) + (" &" if self.background else "")


def steps(block: str) -> list[Step]:
    """The block's commands (continuation lines joined, comments after a command dropped)
    and its comment lines; a comment line that only continues the one above is skipped."""
    out: list[Step] = []
    for line in block.replace("\\\n", " ").splitlines():
        text = line.strip()
        if not text or (text.startswith("#") and line.startswith(" ")):
            continue
        if text.startswith("#"):
            out.append(Step(note=text))
            continue
        argv = shlex.split(text, comments=True)
        background = argv[-1] == "&"
        out.append(Step(argv=argv[:-1] if background else argv, background=background))
    return out


def test_the_other_commands_parse() -> None:
    """The README's further commands are commands of the CLI as it is."""
    (_, more) = bash_blocks((ROOT / "README.md").read_text(), "## Using it")
    lines = steps(more)
    assert lines and all(s.argv[0] == ".venv/bin/recstream" for s in lines)
    for s in lines:
        build_parser().parse_args(s.argv[1:])  # SystemExit(2) on a stale command


@dataclass
class Session:
    """The user's directory and environment, and what the commands printed."""

    cwd: Path
    env: dict[str, str]
    outputs: dict[str, str] = field(default_factory=dict)
    background: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def run(self, step: Step, timeout: float = 240) -> str:
        res = subprocess.run(step.argv, cwd=self.cwd, env=self.env, capture_output=True,
                             text=True, timeout=timeout)
        out = res.stdout + res.stderr
        self.outputs[f"{step.label} #{len(self.outputs)}"] = out
        assert res.returncode == 0, f"`{shlex.join(step.argv)}` exited {res.returncode}:\n{out}"
        return out

    def start(self, step: Step) -> subprocess.Popen[bytes]:
        log = self.log(step)
        with log.open("wb") as f:
            proc = subprocess.Popen(step.argv, cwd=self.cwd, env=self.env, stdout=f,
                                    stderr=subprocess.STDOUT)
        self.background[step.label] = proc
        return proc

    def log(self, step: Step) -> Path:
        return self.cwd / f"{step.label.replace(' ', '-').strip('-&')}.log"

    def wait_for(self, step: Step, text: str, timeout: float) -> str:
        """Until the background command's output (to a file: buffered unless flushed) has
        ``text``; fails when it exits first."""
        proc, log = self.background[step.label], self.log(step)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = log.read_text(errors="replace")
            if text in out:
                return out
            assert proc.poll() is None, f"`{step.label}` exited {proc.returncode}:\n{out}"
            time.sleep(0.5)
        pytest.fail(f"`{step.label}` printed no {text!r} in {timeout:.0f} s:\n"
                    f"{log.read_text(errors='replace')}")


@pytest.fixture
def session(tmp_path: Path) -> Session:
    ports = {name: free_port() for name in ("kafka", "ray", "ray_metrics", "prometheus",
                                            "stream_metrics", "http")}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STACK_", "STREAM_", "SERVE_", "TRAIN_", "PROMETHEUS_"))}
    env.update({
        "STACK_KAFKA_PORT": str(ports["kafka"]), "STACK_RAY_PORT": str(ports["ray"]),
        "STACK_RAY_METRICS_PORT": str(ports["ray_metrics"]),
        "STACK_PROMETHEUS_PORT": str(ports["prometheus"]),
        "STREAM_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{ports['kafka']}",
        "STREAM_METRICS_PORT": str(ports["stream_metrics"]),
        "SERVE_RAY_ADDRESS": f"127.0.0.1:{ports['ray']}", "SERVE_HTTP_PORT": str(ports["http"]),
    })
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    return Session(tmp_path, env)


def _curl(s: Session, step: Step) -> dict:
    """The curl line with its port moved to the test's; by requests where curl is absent."""
    port = s.env["SERVE_HTTP_PORT"]
    argv = [a.replace("localhost:8000", f"127.0.0.1:{port}") for a in step.argv]
    if shutil.which("curl"):
        return dict(json.loads(s.run(Step(argv=argv))))
    body = argv[argv.index("-d") + 1]
    url = next(a for a in argv if "/rank" in a)
    resp = requests.post(f"http://{url}", data=body, timeout=30,
                         headers={"content-type": "application/json"})
    return dict(resp.json())


def _no_foreign_metrics_dir(pid: int) -> None:
    env = psutil.Process(pid).environ()
    assert not [k for k in env if k.upper().startswith("PROMETHEUS_MULTIPROC")], (pid, env)


def test_the_readme_walkthrough_works_as_written(session: Session) -> None:
    readme = (ROOT / "README.md").read_text()
    walk = steps(bash_blocks(readme, "## Using it")[0])
    assert [s.label for s in walk] == WALK
    curl = next(s for s in walk if s.label == "curl")
    assert json.loads(curl.argv[curl.argv.index("-d") + 1])["user_id"] == USER
    producer = python_block((ROOT / "docs" / "events.md").read_text())
    (session.cwd / "produce_events.py").write_text(producer)
    s = session
    try:
        for step in walk:
            if step.label == "stack up":
                s.run(step)
                ray_port = int(s.env["STACK_RAY_PORT"])
                for proc in stack.ray_processes(ray_port):  # point 1: none inherits Feast's dir
                    _no_foreign_metrics_dir(proc.pid)
                for pidfile in ("tansu.pid", "prometheus.pid"):
                    if (s.cwd / ".recstream" / pidfile).exists():
                        _no_foreign_metrics_dir(int((s.cwd / ".recstream" / pidfile).read_text()))
            elif step.label == "stream run &":
                s.start(step)
                s.wait_for(step, "stream run: consuming events", 90)
            elif step.label == "docs/events.md":
                s.run(Step(argv=[".venv/bin/python", "produce_events.py"]))
            elif step.label == "dlq":  # until the consumer has read them
                deadline = time.monotonic() + 90
                while not all(r in (out := s.run(step)) for r in REASONS):
                    assert time.monotonic() < deadline, out
                    time.sleep(2)
            elif step.label == "serve &":
                s.start(step)
                s.wait_for(step, "serving at", 300)
            elif step.label == "curl":
                deadline = time.monotonic() + 30
                while (body := _curl(s, step)).get("history_length") != CLICKS:
                    assert time.monotonic() < deadline, body
                    time.sleep(1)
            elif step.label == "stack down":
                pids = {label: p.pid for label, p in s.background.items()}
                out = s.run(step)
                assert f"stream run (pid {pids['stream run &']})" in out, out
                assert f"serve (pid {pids['serve &']})" in out, out
                for proc in s.background.values():
                    proc.wait(timeout=10)
                assert not stack._port_open(int(s.env["STACK_KAFKA_PORT"]))
            else:
                s.run(step)
    finally:
        for proc in s.background.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        subprocess.run([".venv/bin/recstream", "stack", "down", "--all"], cwd=s.cwd,
                       env=s.env, capture_output=True, timeout=120)
    printed = [*s.outputs.values(), *(p.read_text() for p in s.cwd.glob("*.log"))]
    assert not [o for o in printed if "DeprecationWarning" in o or "Traceback" in o], printed
