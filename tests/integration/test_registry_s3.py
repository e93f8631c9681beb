"""The S3 object store against moto's standalone server on a free loopback port.

moto is an emulator, not S3: it honours ``If-None-Match: *`` on PutObject (412
PreconditionFailed when the key exists), which the store relies on to store one digest once,
but it does not verify ``ChecksumSHA256`` against the body as S3 does; the store's own sha256
check on every read is what these tests exercise. The server runs in this process's threads
(``ThreadedMotoServer``); writer subprocesses reach it over HTTP like any client.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from daemon.registry import ModelCorrupt, ModelRegistry, RegistryError
from daemon.registry.stores.s3 import S3ObjectStore
from tests.support.redis_server import free_port
from tests.support.registry_backends import registry_url

__all__ = ["registry_url"]

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "ringrift-models"
CREDS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """moto's server on a free loopback port, with an empty bucket; stopped afterwards."""
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        # moto keeps its state per process, across servers: start each test from nothing.
        urllib.request.urlopen(
            urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10
        )
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


def _location(endpoint: str) -> str:
    return f"s3://{BUCKET}/fleet/models?endpoint={endpoint}&region=us-east-1"


def _client(endpoint: str) -> object:
    return boto3.client("s3", endpoint_url=endpoint)


def _keys(endpoint: str) -> list[str]:
    listing = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=BUCKET)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def _model(tmp: Path, name: str, size: int = 50_000) -> Path:
    p = tmp / "src" / name
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(os.urandom(size))
    return p


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_register_fetch_and_dedup(tmp_path: Path, s3_endpoint: str, registry_url: str | None) -> None:
    with ModelRegistry(tmp_path / "reg", url=registry_url, store=_location(s3_endpoint)) as reg:
        src = _model(tmp_path, "a.pt")
        a = reg.register(src, "square8", 2, fencing_token=1)
        b = reg.register(src, "square8", 2, fencing_token=1)  # the same bytes: stored once
        rec = reg.require_model(a)
        assert rec.path == f"s3://{BUCKET}/fleet/models/sha256/{_sha(src)}.pt" == reg.require_model(b).path
        assert _keys(s3_endpoint) == [f"fleet/models/sha256/{_sha(src)}.pt"]
        out = tmp_path / "out.pt"
        assert reg.pull("square8_2p", stage="candidate", out=out).model_id == b
        assert out.read_bytes() == src.read_bytes()
        assert reg.verify() == []
        assert not (tmp_path / "reg" / "objects").exists()  # nothing written locally


def test_conditional_create_keeps_the_first_copy(tmp_path: Path, s3_endpoint: str) -> None:
    store = S3ObjectStore(_location(s3_endpoint))
    store.open()
    src = _model(tmp_path, "a.pt")
    first = store.stage(src)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    head = s3.head_object(Bucket=BUCKET, Key=store.key(first.digest))
    second = store.stage(src)
    assert (first.created, second.created) == (True, False)  # 412 on the second PUT
    assert s3.head_object(Bucket=BUCKET, Key=store.key(first.digest))["ETag"] == head["ETag"]
    assert store.publish(second) is False and store.publish(first) is True


def test_corrupt_or_missing_object_is_marked(tmp_path: Path, s3_endpoint: str) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    with ModelRegistry(tmp_path / "reg", store=_location(s3_endpoint)) as reg:
        a = reg.register(_model(tmp_path, "a.pt"), "square8", 2)
        b = reg.register(_model(tmp_path, "b.pt"), "square8", 2)
        key_a = reg.require_model(a).path.removeprefix(f"s3://{BUCKET}/")
        body = s3.get_object(Bucket=BUCKET, Key=key_a)["Body"].read()
        s3.put_object(Bucket=BUCKET, Key=key_a, Body=bytes([body[0] ^ 1]) + body[1:])
        out = tmp_path / "out.pt"
        with pytest.raises(ModelCorrupt, match="digest_mismatch"):
            reg.fetch(a, out)
        assert not out.exists() and reg.require_model(a).status == "corrupt"
        s3.delete_object(Bucket=BUCKET, Key=reg.require_model(b).path.removeprefix(f"s3://{BUCKET}/"))
        assert [(p.model_id, p.problem) for p in reg.verify(mark=False)] == [
            (a, "digest_mismatch"),
            (b, "missing"),
        ]
        with pytest.raises(ModelCorrupt, match="missing"):
            reg.fetch(b, out)
        assert reg.require_model(b).status == "corrupt" and reg.warm_start_parent("square8_2p") is None


def test_gc_and_failed_registration_leave_no_orphans(tmp_path: Path, s3_endpoint: str) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    with ModelRegistry(tmp_path / "reg", store=_location(s3_endpoint)) as reg:
        keep = reg.register(_model(tmp_path, "keep.pt"), "square8", 2, fencing_token=5)
        # A stale holder: its upload happens, the fencing check refuses it, the object is dropped.
        with pytest.raises(RegistryError, match="rejected"):
            reg.register(_model(tmp_path, "stale.pt"), "square8", 2, fencing_token=6, fence_check=_refuse)
        orphan = "fleet/models/sha256/" + "cd" * 32 + ".pt"
        s3.put_object(Bucket=BUCKET, Key=orphan, Body=b"left by a dead writer")
        s3.put_object(Bucket=BUCKET, Key="fleet/models/sha256/not-an-object.txt", Body=b"x")
        kept = reg.collect_garbage(now=datetime.now(UTC) + timedelta(seconds=5))
        assert kept.orphans_kept == [f"s3://{BUCKET}/{orphan}"]
        report = reg.collect_garbage(now=datetime.now(UTC) + timedelta(hours=2))
        assert report.orphans_removed == [f"s3://{BUCKET}/{orphan}"]
        assert _keys(s3_endpoint) == sorted(
            [
                reg.require_model(keep).path.removeprefix(f"s3://{BUCKET}/"),
                "fleet/models/sha256/not-an-object.txt",
            ]
        )


def _refuse(config: str, token: int | None) -> None:
    from daemon.registry import FencingTokenRejected

    raise FencingTokenRejected(config, token or 0, 99)


def test_publish_reuploads_an_object_collected_since_stage(tmp_path: Path, s3_endpoint: str) -> None:
    """Dedup onto an old orphan that GC removes before the write lock: publish stores it again."""
    src = _model(tmp_path, "a.pt")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    key = f"fleet/models/sha256/{_sha(src)}.pt"
    s3.put_object(Bucket=BUCKET, Key=key, Body=src.read_bytes())  # an unreferenced old copy

    def hook(point: str) -> None:
        if point == "copied":  # staged (deduplicated, 412) but not yet published
            reg.collect_garbage(now=datetime.now(UTC) + timedelta(hours=2))
            assert _keys(s3_endpoint) == []

    reg = ModelRegistry(tmp_path / "reg", store=_location(s3_endpoint), hook=hook)
    with reg:
        mid = reg.register(src, "square8", 2)
        assert _keys(s3_endpoint) == [key]
        assert reg.fetch(mid, tmp_path / "out.pt").sha256 == _sha(src)


STOPPER = r"""
import os, signal, sys
from pathlib import Path
from daemon.registry import ModelRegistry
reg_dir, store, model = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])

def hook(point):
    if point == "published":
        print(point, flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)

with ModelRegistry(reg_dir, store=store, hook=hook) as reg:
    reg.register(model, "square8", 2, fencing_token=3)
"""


def test_sigkill_between_publish_and_commit(tmp_path: Path, s3_endpoint: str) -> None:
    model = _model(tmp_path, "m.pt")
    location = _location(s3_endpoint)
    proc = subprocess.Popen(
        [sys.executable, "-c", STOPPER, str(tmp_path / "reg"), location, str(model)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "published"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert _keys(s3_endpoint) == [f"fleet/models/sha256/{_sha(model)}.pt"]
    with ModelRegistry(tmp_path / "reg", store=location) as reg:
        assert reg.list_models() == []
        assert reg.collect_garbage(now=datetime.now(UTC) + timedelta(minutes=1)).orphans_kept != []
        reg.collect_garbage(now=datetime.now(UTC) + timedelta(hours=2))
        assert _keys(s3_endpoint) == []


def test_unusable_locations_are_clear_errors(tmp_path: Path, s3_endpoint: str) -> None:
    with pytest.raises(RegistryError, match="does not exist"):
        ModelRegistry(tmp_path / "a", store=f"s3://no-such-bucket?endpoint={s3_endpoint}").open()
    with pytest.raises(RegistryError, match="unknown option"):
        ModelRegistry(tmp_path / "b", store=f"s3://{BUCKET}?endpoint={s3_endpoint}&secret=x")
    with pytest.raises(RegistryError, match="unsupported scheme"):
        ModelRegistry(tmp_path / "c", store="gs://bucket/models")
    dead = f"s3://{BUCKET}?endpoint=http://127.0.0.1:{free_port()}&attempts=1"
    with pytest.raises(RegistryError, match="unreachable"):
        ModelRegistry(tmp_path / "d", store=dead).open()
