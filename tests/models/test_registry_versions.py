"""The Registry: publish and load on local, file:// and memory:// roots, manifests, hashes
checked on load, names that would leave the root, pointers, rollback, history, rejections."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save

from models.ranker import Ranker
from models.registry import IntegrityError, Registry, RegistryError, VersionNotFound
from models.registry.serial import cpu_state, sha256
from models.train import build_model

from .conftest import item_table, random_batch

RANGE = {"topic": "samples", "partitions": {"0": [0, 99], "1": [0, 120]}}


@pytest.fixture(params=["path", "file", "memory"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A registry root of each kind: a local path, a file:// URL, a memory:// URL."""
    if request.param == "memory":
        url = f"memory://reg-{uuid.uuid4().hex[:8]}"
        yield url
        Registry(url).store.remove()
    else:
        yield str(tmp_path / "reg") if request.param == "path" else f"file://{tmp_path}/reg"


def _model(frame: pd.DataFrame, arch: str = "din", seed: int = 0) -> Ranker:
    torch.manual_seed(seed)
    return build_model(arch, frame, dim=4).eval()


def _publish(reg: Registry, model: Ranker, family: str = "din", parent: str | None = None,
             auc: float = 0.7) -> str:
    return reg.publish(model, family, parent=parent, sample_range=RANGE, metrics={"auc": auc})


def test_publish_then_load_gives_the_same_model(root: str, frame: pd.DataFrame) -> None:
    reg = Registry(root)
    model = _model(frame, "dien")
    vid = reg.publish(model, "dien", parent=None, sample_range=RANGE, metrics={"auc": 0.71},
                      code_version="abc123", extra={"note": "first"})
    loaded = Registry(root).load(vid)
    batch = random_batch(*item_table(frame))
    with torch.no_grad():
        assert torch.equal(loaded(batch), model(batch))
    assert loaded.registry_version == vid == model.registry_version
    assert loaded.version == model.version is not None and not loaded.training
    m = reg.manifest(vid)
    assert vid.startswith("dien-") and m["version"] == vid and m["family"] == "dien"
    assert (m["arch"], m["parent"], m["bank_version"]) == ("dien", None, model.bank.version)
    assert m["sample_range"] == RANGE and m["metrics"] == {"auc": 0.71}
    assert (m["code_version"], m["extra"]) == ("abc123", {"note": "first"})
    assert m["created_at"].endswith("+00:00") and m["config"]["dim"] == 4
    assert m["files"] == {"top.safetensors": sha256(save(cpu_state(model.top)))}
    assert reg.bank_manifest(m["bank_version"])["files"]["bank.safetensors"] == sha256(
        save(cpu_state(model.bank)))
    assert [v["version"] for v in reg.versions()] == [vid] == [
        v["version"] for v in reg.versions("dien")] and reg.versions("din") == []
    files = reg.store.fs.find(reg.store.root)
    assert files and all(f.endswith((".safetensors", ".json")) for f in files)  # no pickle


def test_a_bank_is_published_once_and_shared(root: str, frame: pd.DataFrame) -> None:
    reg = Registry(root)
    model = _model(frame)
    bank_id = reg.publish_bank(model.bank)
    assert bank_id == model.bank.version == model.bank.content_hash()
    stamp = reg.bank_manifest(bank_id)["created_at"]
    v1 = _publish(reg, model)
    v2 = _publish(reg, build_model("base", model.bank), family="base")
    assert reg.publish_bank(model.bank) == bank_id and len(reg.banks()) == 1
    assert reg.bank_manifest(bank_id)["created_at"] == stamp  # not rewritten
    bank = reg.load_bank(bank_id, frozen=True)
    a, b = reg.load(v1, bank=bank), reg.load(v2, bank=bank)
    assert a.bank is bank is b.bank and not any(p.requires_grad for p in bank.parameters())
    with pytest.raises(RegistryError, match="needs bank"):
        reg.load(v1, bank=_model(frame, seed=1).bank)


def test_version_ids_are_unique_and_sorted_by_time(frame: pd.DataFrame, tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    model = _model(frame)
    vids = [_publish(reg, model) for _ in range(6)]
    assert len(set(vids)) == 6 and vids == sorted(vids)
    assert [m["version"] for m in reg.versions()] == vids


def test_rollback_restores_the_previous_version_byte_for_byte(root: str,
                                                              frame: pd.DataFrame) -> None:
    reg = Registry(root)
    models = [_model(frame, seed=s) for s in range(4)]
    a, b, c = (_publish(reg, m) for m in models[:3])
    for vid in (a, b, c):
        reg.promote("din", vid, reason=f"better: {vid}")
    assert reg.pointer("din") == c
    assert reg.rollback("din", reason="auc dropped") == b
    live = reg.load_pointer("din")
    assert live.registry_version == b
    assert save(cpu_state(live.top)) == save(cpu_state(models[1].top))
    assert save(cpu_state(live.bank)) == save(cpu_state(models[1].bank))
    batch = random_batch(*item_table(frame))
    with torch.no_grad():
        assert torch.equal(live(batch), models[1](batch))
    assert reg.rollback("din") == a
    with pytest.raises(RegistryError, match="no earlier version"):
        reg.rollback("din")
    d = _publish(reg, models[3])
    reg.promote("din", d)
    assert reg.rollback("din") == a  # one promotion back: d undone, a again
    history = reg.history("din")
    assert [(e["version"], e["action"]) for e in history] == [
        (a, "promote"), (b, "promote"), (c, "promote"), (b, "rollback"), (a, "rollback"),
        (d, "promote"), (a, "rollback")]
    assert history[3]["reason"] == "auc dropped" and history[3]["from"] == c
    assert history[0]["reason"] == f"better: {a}" and history[0]["at"] < history[-1]["at"]


def test_pointers_name_complete_versions_of_their_family(root: str,
                                                         frame: pd.DataFrame) -> None:
    reg = Registry(root)
    din = _publish(reg, _model(frame))
    base = _publish(reg, _model(frame, "base"), family="base")
    assert reg.pointer("din") is None and reg.pointers("din") == {}
    with pytest.raises(RegistryError, match="never set"):
        reg.rollback("din")
    with pytest.raises(VersionNotFound):
        reg.set_pointer("din", "live", "din-20990101T000000.000-000000")
    with pytest.raises(RegistryError, match="not 'din'"):
        reg.promote("din", base)
    reg.set_pointer("din", "candidate", din, reason="shadow")
    reg.set_pointer("din", "ab-variant-2", din)
    reg.set_pointer("din", "candidate", din)  # already there: nothing recorded
    assert reg.pointers("din") == {"candidate": din, "ab-variant-2": din}
    assert reg.pointer("din") is None and len(reg.history("din", "candidate")) == 1
    assert reg.families() == ["din"]
    assert reg.load_pointer("din", "candidate", device="cpu").registry_version == din
    with pytest.raises(RegistryError, match="never set"):
        reg.load_pointer("din")


def test_a_changed_byte_is_refused_on_load(tmp_path: Path, frame: pd.DataFrame) -> None:
    reg = Registry(tmp_path)
    model = _model(frame)
    vid = _publish(reg, model)
    bank_id = reg.manifest(vid)["bank_version"]
    top = tmp_path / "versions" / vid / "top.safetensors"
    data = bytearray(top.read_bytes())
    data[-3] ^= 1  # a weight's bit: a valid safetensors file, other numbers
    top.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match"):
        reg.load(vid)
    assert len(reg.check()) == 1
    bank_dir = tmp_path / "banks" / bank_id
    state = cpu_state(model.bank)
    state["tables.item.weight"][3, 0] += 1.0
    (bank_dir / "bank.safetensors").write_bytes(save(state))
    with pytest.raises(IntegrityError, match="sha256"):
        reg.load_bank(bank_id)
    manifest = json.loads((bank_dir / "MANIFEST.json").read_text())  # hash "fixed" too:
    manifest["files"]["bank.safetensors"] = sha256(save(state))       # the tensors' hash
    (bank_dir / "MANIFEST.json").write_text(json.dumps(manifest))     # is the bank's id
    with pytest.raises(IntegrityError, match="does not match its version"):
        reg.load_bank(bank_id)


BAD_NAMES = ["..", "../x", "a/b", "/abs", ".hidden", "", "x..y", "a" * 129, "a b", "a\\b",
             "é", "din\n"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_names_that_could_leave_the_root_are_refused(bad: str, tmp_path: Path,
                                                     frame: pd.DataFrame) -> None:
    reg = Registry(tmp_path / "reg")
    vid = _publish(reg, _model(frame))
    before = sorted(p for p in tmp_path.rglob("*"))
    calls = [lambda: reg.manifest(bad), lambda: reg.load(bad), lambda: reg.load_bank(bad),
             lambda: _publish(reg, _model(frame), family=bad),
             lambda: _publish(reg, _model(frame), parent=bad),
             lambda: reg.set_pointer("din", bad, vid), lambda: reg.set_pointer(bad, "live", vid),
             lambda: reg.pointer(bad), lambda: reg.history("din", bad),
             lambda: reg.rollback(bad), lambda: reg.pointers(bad), lambda: reg.rejections(bad),
             lambda: reg.record_rejection(bad, candidate_manifest={}, reason="", metrics={})]
    for call in calls:
        with pytest.raises(RegistryError, match="invalid"):
            call()
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written anywhere


def test_a_publish_that_cannot_be_recorded_writes_nothing(root: str,
                                                         frame: pd.DataFrame) -> None:
    reg = Registry(root)
    with pytest.raises(VersionNotFound):
        _publish(reg, _model(frame), parent="din-20990101T000000.000-000000")
    with pytest.raises(RegistryError, match="not JSON"):
        reg.publish(_model(frame), "din", parent=None, sample_range={"x": object()},
                    metrics={})
    assert reg.versions() == [] and reg.banks() == [] and reg.gc() == []


def test_rejections_are_kept_and_listed_oldest_first(root: str, frame: pd.DataFrame) -> None:
    reg = Registry(root)
    live = _publish(reg, _model(frame))
    cand = _publish(reg, _model(frame, seed=1), parent=live, auc=0.65)
    reg.record_rejection("din", candidate_manifest=reg.manifest(cand), reason="auc -0.05",
                         metrics={"auc": 0.65, "live_auc": 0.70})
    reg.record_rejection("din", candidate_manifest={"version": None}, reason="nan loss",
                         metrics={})
    rejected = Registry(root).rejections("din")
    assert [r["reason"] for r in rejected] == ["auc -0.05", "nan loss"]
    assert rejected[0]["candidate"]["version"] == cand
    assert rejected[0]["candidate"]["parent"] == live
    assert rejected[0]["metrics"]["live_auc"] == 0.70 and rejected[0]["family"] == "din"
    assert reg.rejections("dien") == []


def test_loading_for_serving_imports_neither_training_code_nor_pandas(
        tmp_path: Path, frame: pd.DataFrame) -> None:
    reg = Registry(tmp_path)
    vid = _publish(reg, _model(frame, "dien"), family="dien")
    reg.promote("dien", vid)
    code = ("import sys\n"
            "from models.registry import Registry\n"
            "m = Registry(sys.argv[1]).load_pointer('dien')\n"
            "assert m.registry_version, m\n"
            "print(sorted(k for k in sys.modules if k == 'pandas' or k.startswith('models.tr')"
            " or k.startswith('models.data')))\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
