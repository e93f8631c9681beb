"""Content-addressed model files in S3 (``s3://bucket/prefix``), through boto3.

Keys are ``<prefix>/sha256/<hex>.pt``. Options ride on the location's query string:
``s3://bucket/prefix?endpoint=http://host:port&region=eu-west-1&attempts=5`` (an S3-compatible
server or an emulator; ``attempts`` bounds botocore's retries); credentials come from boto3's
standard chain (environment, config files, instance or task role), never from the location.

A PUT is atomic (an object appears whole or not at all), so no temp keys exist. One digest
is stored once: ``stage`` uploads with ``If-None-Match: *`` (S3 conditional writes, 2024),
and a ``412 PreconditionFailed`` means the same bytes are already stored; a server that
ignores the header overwrites identical bytes, which is harmless for a content-addressed key.
``ChecksumSHA256`` asks S3 to refuse a body that does not hash to the key. Uploads happen
before the registry's write lock; ``publish`` (under the lock, so never concurrent with GC)
re-checks the object with HEAD and re-uploads from the source if a GC removed an old copy
this stage had deduplicated onto. An object uploaded by a registration that then fails or
dies is unreferenced: the registry drops it at once, or GC collects it after its grace.
Every read (``fetch``, ``check``) streams the object and verifies size and sha256.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from daemon.registry.records import ObjectDamaged, RegistryError
from daemon.registry.store import OBJECTS_PREFIX, Staged
from daemon.registry.stores.atomic import CHUNK, write_verified

MAX_PUT_BYTES = 5 << 30  # S3's limit for one PUT
_KEY = re.compile(r"([0-9a-f]{64})\.pt$")
_MISSING = {"404", "NoSuchKey", "NotFound"}


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


class S3ObjectStore:
    """Objects in one bucket under one prefix (see the module docstring)."""

    def __init__(self, location: str) -> None:
        parts = urlsplit(location)
        if parts.scheme != "s3" or not parts.netloc:
            raise RegistryError(f"object store {location!r}: expected s3://BUCKET[/PREFIX]")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"endpoint", "region", "attempts"}
        if unknown:
            raise RegistryError(f"object store {location!r}: unknown option(s) {', '.join(sorted(unknown))}")
        self.location = location
        self.bucket = parts.netloc
        self.prefix = "/".join(p for p in (parts.path.strip("/"), OBJECTS_PREFIX) if p)
        self.endpoint = query.get("endpoint")
        self.region = query.get("region")
        try:
            self.attempts = max(1, int(query.get("attempts", "5")))
        except ValueError:
            raise RegistryError(f"object store {location!r}: attempts must be an integer") from None
        self._s3: Any = None

    @property
    def _client(self) -> Any:
        if self._s3 is None:
            self._s3 = boto3.session.Session().client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=self.region,
                config=Config(
                    connect_timeout=5,
                    read_timeout=60,
                    retries={"max_attempts": self.attempts, "mode": "standard"},
                ),
            )
        return self._s3

    def _fail(self, what: str, e: Exception) -> RegistryError:
        return RegistryError(f"object store s3://{self.bucket}/{self.prefix}: {what}: {e}")

    def open(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            if _code(e) in _MISSING:
                why = f"bucket {self.bucket!r} does not exist"
                raise RegistryError(f"object store {self.location}: {why}") from None
            raise self._fail("cannot open", e) from None
        except BotoCoreError as e:
            raise self._fail("unreachable", e) from None

    def key(self, digest: str) -> str:
        return f"{self.prefix}/{digest}.pt"

    def locate(self, digest: str) -> str:
        return f"s3://{self.bucket}/{self.key(digest)}"

    def _put(self, src: Path, digest: str, *, conditional: bool) -> bool:
        """Upload ``src`` as ``digest``; False if ``conditional`` and the object already exists."""
        extra = {"IfNoneMatch": "*"} if conditional else {}
        try:
            with src.open("rb") as body:
                self._client.put_object(
                    Bucket=self.bucket,
                    Key=self.key(digest),
                    Body=body,
                    ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode(),
                    **extra,
                )
        except ClientError as e:
            # 409 ConditionalRequestConflict: a concurrent conditional PUT of the same key is in
            # flight; publish() re-checks under the lock and uploads again if it did not land.
            if conditional and _code(e) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise self._fail(f"upload of {src}", e) from None
        except BotoCoreError as e:
            raise self._fail(f"upload of {src}", e) from None
        return True

    def stage(self, src: Path) -> Staged:
        with src.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        size = src.stat().st_size
        if size == 0:
            raise RegistryError(f"model file {src}: empty")
        if size > MAX_PUT_BYTES:
            raise RegistryError(f"model file {src}: {size} bytes is over S3's single-PUT limit of 5 GiB")
        created = self._put(src, digest, conditional=True)
        return Staged(digest, size, source=src, created=created)

    def _head(self, digest: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = self._client.head_object(Bucket=self.bucket, Key=self.key(digest))
        except ClientError as e:
            if _code(e) in _MISSING:
                return None
            raise self._fail(f"HEAD {self.key(digest)}", e) from None
        except BotoCoreError as e:
            raise self._fail(f"HEAD {self.key(digest)}", e) from None
        return head

    def _head_size(self, digest: str) -> int | None:
        head = self._head(digest)
        return None if head is None else int(head["ContentLength"])

    def mtime(self, digest: str) -> float | None:
        head = self._head(digest)
        return None if head is None else float(head["LastModified"].timestamp())

    def publish(self, staged: Staged) -> bool:
        """Make sure the object is there (under the registry's write lock); True if this
        registration stored it (so a failed registration drops it again)."""
        size = self._head_size(staged.digest)
        if size == staged.size:
            return staged.created
        if staged.source is None or not staged.source.is_file():
            raise RegistryError(f"object {self.locate(staged.digest)} vanished before publication")
        # Gone (collected since stage) or a damaged copy under this name: store the bytes again.
        self._put(staged.source, staged.digest, conditional=size is None)
        staged.created = True
        return True

    def release(self, staged: Staged) -> None:
        """Nothing to drop locally: an uploaded object is dropped by the registry (it checks rows)."""

    def remove(self, digest: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self.key(digest))
        except (ClientError, BotoCoreError) as e:
            raise self._fail(f"delete of {self.key(digest)}", e) from None

    def objects(self) -> Iterator[tuple[str, float]]:
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + "/"
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    m = _KEY.search(obj["Key"])
                    if m is not None and obj["Key"] == self.key(m.group(1)):
                        yield m.group(1), obj["LastModified"].timestamp()
        except (ClientError, BotoCoreError) as e:
            raise self._fail("listing", e) from None

    def _chunks(self, digest: str) -> Iterator[bytes]:
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=self.key(digest))["Body"]
        except ClientError as e:
            if _code(e) in _MISSING:
                raise ObjectDamaged(self.locate(digest), "missing") from None
            raise self._fail(f"GET {self.key(digest)}", e) from None
        except BotoCoreError as e:
            raise self._fail(f"GET {self.key(digest)}", e) from None
        try:
            yield from body.iter_chunks(CHUNK)
        except BotoCoreError as e:
            raise self._fail(f"GET {self.key(digest)}", e) from None
        finally:
            body.close()

    def check(self, digest: str, size: int) -> str | None:
        h = hashlib.sha256()
        n = 0
        try:
            for chunk in self._chunks(digest):
                n += len(chunk)
                h.update(chunk)
        except ObjectDamaged as e:
            return e.problem
        if n != size:
            return "size_mismatch"
        return None if h.hexdigest() == digest else "digest_mismatch"

    def fetch(self, digest: str, size: int, dest: Path) -> None:
        write_verified(self._chunks(digest), digest, size, dest, self.locate(digest))

    def sweep_temp(self, older_than: float) -> list[str]:
        """Nothing to sweep: S3 PUTs are atomic and this store never writes temp keys."""
        return []
