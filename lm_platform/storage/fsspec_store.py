"""The storage interface on an fsspec object store: s3:// through s3fs (AWS S3, MinIO, Ceph RGW, R2, GCS's
interoperability endpoint), with the settings every S3-compatible store needs.

Credentials are never passed here: s3fs (botocore) reads them from the environment (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_PROFILE`) or the pod's service account (IRSA / web
identity), so they never reach a recipe, metadata, a log line or `repr(store)`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lm_platform.storage.base import Store


@dataclass(frozen=True)
class S3Options:
    """Where and how to reach the store; nothing secret. `addressing_style`: "path" (MinIO, Ceph, moto),
    "virtual" (AWS's default) or "auto"."""

    endpoint_url: str | None = None
    addressing_style: str = "auto"
    region: str | None = None
    concurrency: int = 8
    retries: int = 6
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0

    def __post_init__(self):
        if self.addressing_style not in ("auto", "path", "virtual"):
            raise ValueError(f"addressing_style: {self.addressing_style!r} is not one of auto, path, virtual")
        if self.concurrency < 1:
            raise ValueError(f"concurrency: {self.concurrency} must be at least 1")


def split_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix")."""
    if not url.startswith("s3://"):
        raise ValueError(f"{url!r} is not an s3:// URL")
    rest = url[len("s3://") :].strip("/")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket")
    return bucket, prefix.strip("/")


class FsspecStore(Store):
    """Objects under `s3://bucket/prefix/<key>`."""

    def __init__(self, url: str, options: S3Options | None = None, fs: Any = None):
        import s3fs

        self.options = options or S3Options()
        self.bucket, self.prefix = split_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.concurrency = self.options.concurrency
        self.retries = self.options.retries
        client_kwargs: dict[str, Any] = {}
        if self.options.endpoint_url:
            client_kwargs["endpoint_url"] = self.options.endpoint_url
        if self.options.region:
            client_kwargs["region_name"] = self.options.region
        config_kwargs = {
            "s3": {"addressing_style": self.options.addressing_style},
            # botocore's own retries with backoff on throttling (SlowDown, 503), under ours.
            "retries": {"max_attempts": self.options.retries, "mode": "adaptive"},
            "connect_timeout": self.options.connect_timeout_s,
            "read_timeout": self.options.read_timeout_s,
            "max_pool_connections": max(10, self.options.concurrency * 2),
        }
        # No key/secret arguments: botocore's chain (environment, service account) supplies them.
        self.fs = fs or s3fs.S3FileSystem(
            client_kwargs=client_kwargs,
            config_kwargs=config_kwargs,
            max_concurrency=self.options.concurrency,
            skip_instance_cache=True,
        )
        # s3fs's own retries of one request (it backs off on SlowDown too), under botocore's and ours.
        self.fs.retries = self.options.retries

    def __repr__(self) -> str:
        return f"FsspecStore({self.url!r}, endpoint_url={self.options.endpoint_url!r})"

    def _full(self, key: str) -> str:
        return "/".join(p for p in (self.bucket, self.prefix, key) if p)

    def _key(self, full: str) -> str:
        head = "/".join(p for p in (self.bucket, self.prefix) if p) + "/"
        return full[len(head) :] if full.startswith(head) else full

    def _put_file(self, local: Path, key: str) -> None:
        self.fs.put_file(str(local), self._full(key))

    def _put_bytes(self, data: bytes, key: str) -> None:
        self.fs.pipe_file(self._full(key), data)

    def _get_file(self, key: str, local: Path) -> None:
        self.fs.get_file(self._full(key), str(local))

    def _get_bytes(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        if start is None:
            return self.fs.cat_file(self._full(key))
        return self.fs.cat_file(self._full(key), start=start, end=end)

    def _list(self, prefix: str) -> dict[str, tuple[int, float, str]]:
        # A listing of the folder part of the prefix, filtered on the whole key.
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        self.fs.invalidate_cache()
        try:
            found = self.fs.find(self._full(head), detail=True, withdirs=False)
        except FileNotFoundError:
            return {}
        out: dict[str, tuple[int, float, str]] = {}
        for full, info in found.items():
            key = self._key(full)
            if not key.startswith(prefix) or info.get("type") == "directory":
                continue
            modified = info.get("LastModified")
            mtime = modified.timestamp() if isinstance(modified, dt.datetime) else 0.0
            tag = str(info.get("ETag") or f"{info.get('size', 0)}:{mtime}")
            out[key] = (int(info.get("size", 0)), mtime, tag)
        return out

    def _delete(self, keys: list[str]) -> None:
        # One DeleteObject per key (GCS's interoperability API has no multi-object delete); deleting an
        # absent key succeeds, as S3 defines it.
        self._parallel(
            lambda k: self.fs.call_s3(
                "delete_object", Bucket=self.bucket, Key=self._full(k)[len(self.bucket) + 1 :]
            ),
            keys,
        )
        self.fs.invalidate_cache()

    def abort_uploads(self, prefix: str, older_than_s: float = 0.0) -> int:
        root = "/".join(p for p in (self.prefix, prefix) if p)
        uploads = self._retry(
            lambda: self.fs.call_s3("list_multipart_uploads", Bucket=self.bucket, Prefix=root)
        ).get("Uploads", [])
        now = dt.datetime.now(dt.UTC)
        aborted = 0
        for up in uploads:
            started = up.get("Initiated")
            if isinstance(started, dt.datetime) and (now - started).total_seconds() < older_than_s:
                continue
            self._retry(
                lambda u=up: self.fs.call_s3(
                    "abort_multipart_upload", Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"]
                )
            )
            aborted += 1
        return aborted
