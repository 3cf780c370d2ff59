"""Amazon S3 or any S3 API (MinIO, Ceph RGW, moto) through boto3. A narrow seam: the few
calls used, one client factory, botocore's 404/NoSuchKey translated to NotFound."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from common.backends import Backend, BackendError, NotFound, keys, register

_MISSING = {"404", "NoSuchKey", "NotFound"}


@register("s3")
class S3Backend(Backend):
    def __init__(
        self,
        bucket: str,
        region: str = "us-east-1",
        endpoint: str = "",
        access_key: str = "",
        secret_key: str = "",
        path_style: bool = False,
        root: str = "",
        multipart_threshold: int = 64 << 20,
        multipart_chunk: int = 16 << 20,
        max_concurrency: int = 4,
        timeout: float = 60.0,
    ):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.root = root.strip("/") + "/" if root.strip("/") else ""
        session = boto3.session.Session(
            aws_access_key_id=access_key or None, aws_secret_access_key=secret_key or None, region_name=region)
        self.client = session.client(
            "s3", endpoint_url=endpoint or None,
            config=Config(s3={"addressing_style": "path" if path_style else "auto"},
                          connect_timeout=min(timeout, 5.0), read_timeout=timeout,
                          retries={"max_attempts": 2, "mode": "standard"}),
        )
        # Large blobs go up in parts; threads are real OS threads inside boto3's transfer
        # manager (gevent patches them into greenlets where the app runs under gevent).
        self.transfer = TransferConfig(multipart_threshold=multipart_threshold, multipart_chunksize=multipart_chunk,
                                       max_concurrency=max_concurrency)

    def _key(self, key: str) -> str:
        return self.root + keys.check(key)

    def _translate(self, exc: Exception, key: str):
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                return NotFound(f"{key} not in s3 bucket {self.bucket}")
            return BackendError(f"s3 {self.bucket}/{key}: {code or exc}")
        if isinstance(exc, BotoCoreError):
            return BackendError(f"s3 unreachable: {exc}")
        return exc

    def stat(self, namespace: str, key: str) -> int:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
        except Exception as exc:  # noqa: BLE001 - translated, anything else re-raised
            raise self._translate(exc, key) from None

    def upload(self, namespace: str, key: str, src: BinaryIO, size: int | None = None) -> None:
        try:
            self.client.upload_fileobj(src, self.bucket, self._key(key), Config=self.transfer)
        except Exception as exc:  # noqa: BLE001
            raise self._translate(exc, key) from None

    def download(self, namespace: str, key: str, dst: BinaryIO) -> int:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            n = 0
            for chunk in resp["Body"].iter_chunks(1 << 20):
                dst.write(chunk)
                n += len(chunk)
            if n != resp["ContentLength"]:
                raise BackendError(f"s3 {key}: short read ({n} of {resp['ContentLength']} bytes)")
            return n
        except BackendError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._translate(exc, key) from None

    def list(self, prefix: str) -> Iterator[str]:
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.root + prefix)
            found = [obj["Key"][len(self.root):] for page in pages for obj in page.get("Contents", [])]
        except Exception as exc:  # noqa: BLE001
            raise self._translate(exc, prefix) from None
        return iter(sorted(found))
