"""Content-addressed artifact bundles: what a serving pod's init step fetches and verifies.

`pack` turns a variant's artifact folder into `<sha256>.tar.gz`, named by the same `tree_sha256` the
manifest records; `fetch` downloads it, unpacks into a temporary folder, recomputes the hash and only then
moves it into place, so a pod never starts on a corrupt or wrong model.

Where a bundle can live (the URL scheme picks the client):
- `s3://bucket/key`: boto3, with the standard AWS credential chain. On EKS that is IRSA (the pod identity
  webhook sets AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE for a ServiceAccount annotated
  `eks.amazonaws.com/role-arn`) or EKS Pod Identity. AWS_ENDPOINT_URL_S3 points it at an S3-compatible
  store (MinIO, a test server); AWS_REGION names the bucket's region.
- `gs://bucket/object`: google-cloud-storage, with Application Default Credentials. On GKE that is Workload
  Identity (a ServiceAccount annotated `iam.gke.io/gcp-service-account`). STORAGE_EMULATOR_HOST points it at
  an emulator.
- `https://` (and `http://`, which the Pulumi program only emits where the stack opts into plain HTTP):
  a GET that follows redirects only within the same scheme, host and port, so a redirect to another host
  fails with that host named instead of hanging on a NetworkPolicy that does not allow it.
- `file://` or a plain path.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import urljoin, urlparse

import httpx

from infopt.hashing import tree_sha256

SCHEMES = ("s3", "gs", "https", "http", "file")
MAX_REDIRECTS = 5


class ArtifactError(RuntimeError):
    """An artifact bundle is missing, unreachable, unsafe to unpack, or does not match its content hash."""


def pack(folder: Path, out_dir: Path) -> Path:
    """Write `<out_dir>/<tree_sha256(folder)>.tar.gz` holding the folder's files at the archive root."""
    folder, out_dir = Path(folder), Path(out_dir)
    if not folder.exists():
        raise ArtifactError(f"{folder}: artifact folder not found")
    digest = tree_sha256(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{digest}.tar.gz"
    with tarfile.open(target, "w:gz") as archive:
        if folder.is_file():
            archive.add(folder, arcname=folder.name)
        else:
            for item in sorted(folder.rglob("*")):
                if item.is_file():
                    archive.add(item, arcname=item.relative_to(folder).as_posix())
    return target


def _bucket_and_key(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    key = parsed.path.lstrip("/")
    if not parsed.netloc or not key:
        raise ArtifactError(f"{url}: expected {parsed.scheme}://<bucket>/<object key>")
    return parsed.netloc, key


def _download_s3(url: str, dest: Path, timeout_s: float) -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _bucket_and_key(url)
    config = Config(connect_timeout=min(timeout_s, 30.0), read_timeout=timeout_s, retries={"max_attempts": 3})
    try:
        boto3.client("s3", config=config).download_file(bucket, key, str(dest))
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "?")
        raise ArtifactError(f"{url}: S3 error {code}: {error}") from None
    except BotoCoreError as error:  # no credentials, endpoint unreachable, ...
        raise ArtifactError(f"{url}: {type(error).__name__}: {error}") from None


def _download_gcs(url: str, dest: Path, timeout_s: float) -> None:
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError
    from google.cloud import storage

    bucket, key = _bucket_and_key(url)
    try:
        client = storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT"))
        client.bucket(bucket).blob(key).download_to_filename(str(dest), timeout=timeout_s)
    except GoogleAPIError as error:
        raise ArtifactError(f"{url}: GCS error: {error}") from None
    except GoogleAuthError as error:
        raise ArtifactError(f"{url}: no Google credentials ({error})") from None


def _download_http(url: str, dest: Path, timeout_s: float) -> None:
    origin = urlparse(url)[:2]
    current = url
    with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                with client.stream("GET", current) as response:
                    if response.is_redirect:
                        target = urljoin(current, response.headers.get("location", ""))
                        if urlparse(target)[:2] != origin:
                            raise ArtifactError(
                                f"{url}: redirected to {target}, another host; point the artifact URL at the "
                                f"final store (s3://, gs:// or its https address) and allow egress to it"
                            )
                        current = target
                        continue
                    if response.status_code != 200:
                        raise ArtifactError(f"{current}: HTTP {response.status_code}")
                    with dest.open("wb") as handle:
                        for chunk in response.iter_bytes():
                            handle.write(chunk)
                    return
            except httpx.HTTPError as error:
                raise ArtifactError(f"{current}: {type(error).__name__}: {error}") from None
    raise ArtifactError(f"{url}: more than {MAX_REDIRECTS} redirects")


def _download(url: str, dest: Path, timeout_s: float) -> None:
    scheme = urlparse(url).scheme
    if scheme == "s3":
        _download_s3(url, dest, timeout_s)
    elif scheme == "gs":
        _download_gcs(url, dest, timeout_s)
    elif scheme in ("http", "https"):
        _download_http(url, dest, timeout_s)
    elif scheme in ("file", ""):
        source = Path(urlparse(url).path if scheme == "file" else url)
        if not source.is_file():
            raise ArtifactError(f"{url}: no such file")
        shutil.copyfile(source, dest)
    else:
        raise ArtifactError(f"{url}: unsupported scheme {scheme!r}; supported: {list(SCHEMES)} or a local path")


def _safe_extract(archive_path: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive_path, "r:gz") as archive:
            for member in archive.getmembers():
                if not (member.isfile() or member.isdir()):
                    raise ArtifactError(f"{archive_path.name}: refusing non-regular member {member.name!r}")
            archive.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ArtifactError(f"{archive_path.name}: not a readable .tar.gz bundle ({error})") from None


def fetch(url: str, expected_sha256: str, dest: Path, *, timeout_s: float = 300.0) -> Path:
    """Download and unpack a bundle into `dest`, verifying its content hash; idempotent when already there."""
    dest = Path(dest)
    if dest.exists() and tree_sha256(dest) == expected_sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as scratch:
        scratch_path = Path(scratch)
        bundle = scratch_path / "bundle.tar.gz"
        _download(url, bundle, timeout_s)
        unpacked = scratch_path / "unpacked"
        _safe_extract(bundle, unpacked)
        actual = tree_sha256(unpacked)
        if actual != expected_sha256:
            raise ArtifactError(
                f"{url}: content sha256 {actual} does not match the manifest's {expected_sha256}; refusing it"
            )
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(unpacked, dest)
    return dest


def verify(path: Path, expected_sha256: str) -> None:
    actual = tree_sha256(Path(path))
    if actual != expected_sha256:
        raise ArtifactError(f"{path}: content sha256 {actual} != expected {expected_sha256}")
