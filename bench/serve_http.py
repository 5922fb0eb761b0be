"""The HTTP side of the serving benchmark (:mod:`bench.serve`): the world it serves (DIN and
DIEN trained and published to a temporary registry, a Feast store with the users'
sequences and the items' categories), the load generator, the FastAPI app in a uvicorn
subprocess, recstream deployed on a local Ray, and the run with a promotion every second.

Run through ``recstream bench serve`` / ``python -m bench.serve`` (not on its own).

The load generator is aiohttp in the benchmark's own process: N connections, each sending
its next request when the last is answered; it shares the machine's cores with the
servers. recstream runs without the prediction log (``log_predictions=False``: no broker).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import logging
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import requests as http_client
import torch
import yaml

from bench.serve import (
    HISTORY,
    ITEMS_PER_CATEGORY,
    N_CATEGORIES,
    Request,
    category,
    summary,
)
from features.store import (
    FeastConfig,
    FeatureAccess,
    UserSequence,
    apply_definitions,
    open_store,
)
from models.ranker import Ranker
from models.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
K = 10  # the top K of the 200 candidates each answer carries (both apps)
ModelSide = Callable[[argparse.Namespace, dict[str, Ranker], Sequence[Request]], dict[str, Any]]


@dataclass
class World:
    """What both apps serve: the registry (family = arch, ``live`` and one other version of
    each on the same bank) and the Feast store."""

    registry: str
    feast: FeastConfig
    versions: dict[str, tuple[str, str]]  # arch -> (live, another top on the same bank)


def build_world(tmp: Path, args: argparse.Namespace, requests: Sequence[Request]) -> World:
    """Train each model on synthetic events (1 epoch), publish it and a second top; write
    the requests' users' sequences and every item's category to a new Feast store."""
    from stream.synthetic import SyntheticConfig, generate
    from train.job import train_full
    from train.settings import TrainSettings
    from train.update import on_same_bank

    root = str(tmp / "registry")
    reg = Registry(root)
    frame = generate(args.events, SyntheticConfig(n_users=300, seed=3))
    versions = {}
    for arch in args.models:
        out = train_full(frame, TrainSettings(arch=arch, family=arch, out_dir=tmp / arch,
                                              registry_root=root, dim=args.dim,
                                              max_history=HISTORY))
        live = reg.load(out["version"])
        other = on_same_bank(live)
        with torch.no_grad():
            for p in other.top.parameters():
                p.add_(0.01)
        versions[arch] = (out["version"], reg.publish(other, arch, parent=out["version"],
                                                      sample_range={}, metrics={}))
        print(f"{arch}: trained in {out['seconds']:.0f} s, AUC {out['auc']:.3f}",
              file=sys.stderr, flush=True)
    feast = FeastConfig(data_dir=tmp / "feast", project="bench_serve")
    apply_definitions(open_store(feast))
    access = FeatureAccess.open(feast)
    users = {r[0]: r for r in requests}
    access.write_sequences({u: UserSequence(item_ids=r[1], cat_ids=r[2],
                                            ts_ms=list(range(len(r[1]))), last_partition=0,
                                            last_offset=u)
                            for u, r in users.items()})
    access.write_items({i: category(i)
                        for i in range(1, N_CATEGORIES * ITEMS_PER_CATEGORY + 1)})
    back = access.ranker_features(requests[0][0], requests[0][3])
    if back != (requests[0][1], requests[0][2], requests[0][4]):
        raise RuntimeError("the Feast store does not give back the features written")
    return World(root, feast, versions)


def bodies(requests: Sequence[Request]) -> list[bytes]:
    """The ``POST /rank`` bodies, encoded once."""
    return [json.dumps({"user_id": r[0], "candidates": r[3], "k": K}).encode()
            for r in requests]


Seen = list[tuple[float, str]]  # (time answered, model_version)


async def _drive(url: str, payloads: Sequence[bytes], concurrency: int, warmup_s: float,
                 duration_s: float, track: bool) -> tuple[list[float], int, Seen]:
    import aiohttp

    start = time.perf_counter()
    begin, end = start + warmup_s, start + warmup_s + duration_s
    latencies: list[float] = []
    seen: Seen = []
    failed = 0
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as http:
        async def worker(k: int) -> None:
            nonlocal failed
            i = k
            while (t0 := time.perf_counter()) < end:
                body = payloads[i % len(payloads)]
                i += concurrency
                raw, ok = b"", False
                try:
                    async with http.post(url, data=body, headers=headers) as resp:
                        raw = await resp.read()
                        ok = resp.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    pass
                t1 = time.perf_counter()
                if t0 < begin:
                    continue
                if not ok:
                    failed += 1
                    continue
                latencies.append(t1 - t0)
                if track:
                    seen.append((t1, json.loads(raw)["model_version"]))

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return latencies, failed, seen


def _host_busy() -> float:
    """CPU seconds the host has spent busy (all cores, since boot)."""
    t = psutil.cpu_times()
    return float(t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0)
                 + getattr(t, "softirq", 0.0))


def _tree_cpu() -> dict[int, float]:
    """CPU seconds of this process and of every descendant (uvicorn, Ray's processes),
    each with its children that ended and were waited for (a stopped uvicorn, in ours)."""
    me = psutil.Process()
    out: dict[int, float] = {}
    for proc in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            out[proc.pid] = t.user + t.system + t.children_user + t.children_system
    return out


class HostCpu:
    """From its creation: the cores this benchmark's processes used and those the rest of
    the host used (other jobs on a shared machine), each averaged over the wall time."""

    def __init__(self) -> None:
        self.start, self.host, self.tree = time.monotonic(), _host_busy(), _tree_cpu()

    def cores(self) -> dict[str, float]:
        wall = max(time.monotonic() - self.start, 1e-9)
        ours = sum(v - self.tree.get(pid, 0.0) for pid, v in _tree_cpu().items())
        others = max(_host_busy() - self.host - ours, 0.0)
        return {"cores_ours": round(ours / wall, 2), "cores_others": round(others / wall, 2)}


def load(url: str, payloads: Sequence[bytes], concurrency: int, warmup_s: float,
         duration_s: float, track: bool = False) -> tuple[dict[str, Any], Seen]:
    """One cell: ``concurrency`` connections for ``warmup_s`` + ``duration_s``; the summary
    of the requests started in the window (failed ones counted apart) with the cores used
    by us and by other jobs over the cell (:class:`HostCpu`), and with ``track`` (time,
    model_version) of each answer."""
    cpu = HostCpu()
    lat, failed, seen = asyncio.run(_drive(url, payloads, concurrency, warmup_s, duration_s,
                                           track))
    return summary(lat, duration_s, failed) | cpu.cores(), seen


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_up(base: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(http_client.RequestException):
            if http_client.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the app at {base} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing answered at {base}/healthz in {timeout_s:.0f} s")
        time.sleep(0.3)


@contextlib.contextmanager
def fastapi_app(world: World, arch: str, workers: int, log: Path) -> Iterator[str]:
    """bench.serve_fastapi under uvicorn (``workers`` processes) on a free port."""
    port = _free_port()
    env = os.environ | {"BENCH_FEAST_DIR": str(world.feast.data_dir),
                        "BENCH_FEAST_PROJECT": world.feast.project,
                        "BENCH_REGISTRY": world.registry, "BENCH_FAMILY": arch,
                        "BENCH_MAX_HISTORY": str(HISTORY)}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.serve_fastapi:app", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(workers), "--log-level", "warning",
             "--no-access-log"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(base, 120, proc)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def deploy_recstream(world: World, arch: str, tmp: Path, port: int) -> str:
    """recstream's app on the running Ray with infra/serve.yaml's settings, its one variant
    following ``<arch>/live``; the base URL."""
    from serve import deploy as serving
    from serve.config import ServeSettings

    shipped = yaml.safe_load((ROOT / "infra" / "serve.yaml").read_text())
    variant = shipped["variants"][0] | {"name": arch, "family": arch, "pointer": "live"}
    cfg = shipped | {"name": "bench", "variants": [variant]}
    path = tmp / f"serve-{arch}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return serving.deploy(ServeSettings(
        config_path=path, feast=world.feast, http_port=port, registry_root=world.registry,
        experiment_path=tmp / "experiment.json", log_predictions=False,
        ray_auth_token_path=None))


def reload_run(world: World, arch: str, base: str, payloads: Sequence[bytes],
               args: argparse.Namespace) -> dict[str, Any]:
    """recstream under load while the ``live`` pointer moves between two versions every
    second; failed requests, versions seen changing in the answers, p50/p99/rps."""
    reg = Registry(world.registry)
    pair = world.versions[arch]
    stop = threading.Event()
    promoted: list[float] = []

    def promote() -> None:
        time.sleep(args.warmup_s)
        n = 0
        while not stop.wait(1.0):
            n += 1
            reg.promote(arch, pair[n % 2], reason=f"serve benchmark reload {n}")
            promoted.append(time.perf_counter())

    promoter = threading.Thread(target=promote, daemon=True)
    promoter.start()
    try:
        cell, seen = load(f"{base}/rank", payloads, args.reload_concurrency, args.warmup_s,
                          args.reload_s, track=True)
    finally:
        stop.set()
        promoter.join()
        reg.promote(arch, pair[0], reason="serve benchmark reload: back")
    seen.sort()
    switches = sum(1 for a, b in itertools.pairwise(seen) if a[1] != b[1])
    return cell | {"reload_failed_requests": cell.get("failed", 0), "reloads": len(promoted),
                   "version_changes_seen": switches,
                   "versions_seen": sorted({v for _, v in seen}),
                   "concurrency": args.reload_concurrency}


_ACCESS = re.compile(r"^\w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\S+) \S+ \S+ -- "
                     r"(POST /rank 200|CALL fetch OK|CALL score OK) ([0-9.]+)ms$")


def stages(logs: Path, windows: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """Per cell (wall-clock window), the median time of each stage of a request from Ray
    Serve's access log lines: the proxy's whole request, the ingress' (``Ranker``), the
    feature read (``FeatureReader.fetch``) and the scoring (``Scorer.score``: the queue,
    the batch's wait and the model)."""
    found: dict[str, dict[str, list[float]]] = {c: {} for c in windows}
    for path in sorted(logs.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            m = _ACCESS.match(line)
            if m is None:
                continue
            at = dt.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            stage = {"CALL fetch OK": "reader_fetch", "CALL score OK": "scorer_score"}.get(
                m[3], "proxy" if m[2] == "proxy" else "ingress")
            for cell, (begin, end) in windows.items():
                if begin <= at <= end:
                    found[cell].setdefault(stage, []).append(float(m[4]))
    return {cell: {f"{k}_p50_ms": round(statistics.median(v), 2) for k, v in sorted(f.items())}
            for cell, f in found.items()}


def feature_read(world: World, requests: Sequence[Request], duration_s: float
                 ) -> dict[str, Any]:
    """In-process ``ranker_features`` of one request after the other (the Feast read both
    apps pay before the model)."""
    access = FeatureAccess.open(world.feast)
    lat: list[float] = []
    end = time.perf_counter() + duration_s
    i = 0
    while time.perf_counter() < end:
        r = requests[i % len(requests)]
        t0 = time.perf_counter()
        access.ranker_features(r[0], r[3])
        lat.append(time.perf_counter() - t0)
        i += 1
    return summary(lat, sum(lat))


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def targets(result: dict[str, Any], models: Sequence[str]) -> dict[str, Any]:
    """The issue's targets on this machine, judged against the 1-worker FastAPI app."""
    out: dict[str, Any] = {}
    for arch in models:
        row = result[arch]
        if row.get("p50_ratio_c1") is not None:
            out[f"{arch}_p50_ratio_c1_le_2"] = {"value": row["p50_ratio_c1"],
                                                "met": row["p50_ratio_c1"] <= 2}
        if row.get("rps_ratio_c32") is not None:
            out[f"{arch}_rps_ratio_c32_ge_1"] = {"value": row["rps_ratio_c32"],
                                                 "met": row["rps_ratio_c32"] >= 1}
        if "reload" in row:
            failed = row["reload"]["reload_failed_requests"]
            out[f"{arch}_reload_failed_requests_eq_0"] = {"value": failed, "met": failed == 0}
    out["dien_gpu"] = "not run here: `--device cuda` on an NVIDIA GPU"
    return out


def run_systems(args: argparse.Namespace, requests: Sequence[Request],
                model_side: ModelSide) -> dict[str, Any]:
    """The whole CPU run (module docstring of bench.serve): world, model side, FastAPI,
    recstream, reload; each phase's seconds and cores (ours, other jobs') in ``phases``."""
    logging.getLogger("ray").setLevel(logging.WARNING)
    phases: dict[str, dict[str, float]] = {}
    clock, cpu = time.perf_counter(), HostCpu()

    def phase(name: str) -> None:
        nonlocal clock, cpu
        phases[name] = {"s": round(time.perf_counter() - clock, 1)} | cpu.cores()
        clock, cpu = time.perf_counter(), HostCpu()
        print(f"{name}: {phases[name]}", file=sys.stderr, flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    world = build_world(tmp, args, requests)
    phase("world")
    reg = Registry(world.registry)
    models = {arch: reg.load(world.versions[arch][0]) for arch in args.models}
    result: dict[str, Any] = model_side(args, models, requests)
    result["feature_read"] = feature_read(world, requests, args.inprocess_s)
    phase("model_side")
    payloads = bodies(requests)
    for arch in args.models:
        for workers in args.workers:
            key = "fastapi" if workers == 1 else f"fastapi_{workers}_workers"
            with fastapi_app(world, arch, workers, tmp / "uvicorn.log") as base:
                result[arch][key] = {str(c): load(f"{base}/rank", payloads, c, args.warmup_s,
                                                  args.duration)[0]
                                     for c in args.concurrency}
            phase(f"{arch}_{key}")
    import ray


    if args.throughput_optimized:  # the local cluster's processes inherit our environment
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
        os.environ["RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE"] = "1"  # the stages: unbuffered
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             log_to_driver=False, namespace="recstream-bench", logging_level=logging.WARNING)
    try:
        port = _free_port()
        for arch in args.models:
            base = deploy_recstream(world, arch, tmp, port)
            phase(f"{arch}_deploy")
            row = result[arch]
            row["recstream"], windows = {}, {}
            for c in args.concurrency:
                begin = time.time() + args.warmup_s
                row["recstream"][str(c)] = load(f"{base}/rank", payloads, c, args.warmup_s,
                                                args.duration)[0]
                windows[str(c)] = (begin, time.time())
            phase(f"{arch}_recstream")
            if args.reload_s > 0:
                row["reload"] = reload_run(world, arch, base, payloads, args)
                phase(f"{arch}_reload")
            node = ray._private.worker._global_node
            if node is not None:  # the access log lines are on disk by now
                row["recstream_stages"] = stages(Path(node.get_logs_dir_path()) / "serve",
                                                 windows)
    finally:
        ray.shutdown()  # our own instance, Serve with it (serve.shutdown waited ~30 s)
    for arch in args.models:
        row = result[arch]
        lo, hi = str(min(args.concurrency)), str(max(args.concurrency))
        for key in [k for k in row if k.startswith("fastapi")]:
            suffix = "" if key == "fastapi" else key.removeprefix("fastapi")
            row[f"p50_ratio_c{lo}{suffix}"] = _ratio(row["recstream"][lo]["p50_ms"],
                                                     row[key][lo]["p50_ms"])
            row[f"rps_ratio_c{hi}{suffix}"] = _ratio(row["recstream"][hi]["rps"],
                                                     row[key][hi]["rps"])
    result["targets"] = targets(result, args.models)
    result["phases"] = phases
    result["notes"] = {
        "client": "aiohttp in the benchmark's process, on the same cores as the servers",
        "cores": "cores_ours / cores_others: CPU cores used over a cell (warm-up included) or "
                 "a phase by this benchmark's processes and by the rest of the host (other "
                 "jobs of a shared machine), averaged over its wall time",
        "prediction_log": "off (log_predictions=False: no broker)",
        "ray_serve_throughput_optimized": bool(args.throughput_optimized),
        "recstream_config": "infra/serve.yaml's variant settings and AppConfig's defaults "
                            "(2 ingress and 2 reader replicas, 1 scorer replica)",
        "recstream_stages": "per cell, medians from Ray Serve's access log: the proxy's "
                            "request, the ingress', FeatureReader.fetch, Scorer.score (queue, "
                            "batch wait, model)",
        "ratios": "recstream over the FastAPI app (1 worker; *_2_workers: over 2 workers)",
        "answers": f"the top {K} of {len(requests[0][3])} candidates, both apps"}
    return result
