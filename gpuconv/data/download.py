"""The data cache directory and verified downloads (standard library only).

Files are downloaded to a temporary file beside the destination, checked against their
SHA-256 digest where one is known, and only then renamed into place, so an interrupted or
corrupt download never leaves a file that looks complete.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
from http.client import HTTPException
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence
from urllib import request

__all__ = ["cache_dir", "sha256_of", "atomic_write", "download_file", "DownloadError", "SHA256"]

TIMEOUT_S = 60

# Published SHA-256 digests of the files gpuconv downloads, keyed "<dataset>/<file name>".
# Each one was checked against at least two independent public sources (download scripts
# and checksum lists that name the same file); a file missing here is downloaded without
# verification. Never add a digest that was not checked that way.
SHA256 = {
    "mnist/train-images-idx3-ubyte.gz":
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "mnist/train-labels-idx1-ubyte.gz":
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "mnist/t10k-images-idx3-ubyte.gz":
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "mnist/t10k-labels-idx1-ubyte.gz":
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    "fashion_mnist/train-images-idx3-ubyte.gz":
        "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
    "fashion_mnist/train-labels-idx1-ubyte.gz":
        "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
    "fashion_mnist/t10k-images-idx3-ubyte.gz":
        "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
    "fashion_mnist/t10k-labels-idx1-ubyte.gz":
        "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
    "cifar10/cifar-10-binary.tar.gz":
        "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
}


class DownloadError(OSError):
    """A file could not be fetched from any of its addresses."""


def cache_dir() -> Path:
    """Where datasets are kept: ``$GPUCONV_DATA`` if set, else ``~/.cache/gpuconv``."""
    env = os.environ.get("GPUCONV_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gpuconv"


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 digest of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _umask() -> int:
    """The process's umask (read by setting it, then putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(dest: str | os.PathLike) -> Iterator[BinaryIO]:
    """Write ``dest`` through a temporary file beside it, flushed to disk and renamed into
    place on success, so a crash never leaves half a file.

    If the block raises, the temporary file is deleted and ``dest`` is left as it was. The
    file gets the permissions a plain ``open`` would give it (0666 less the umask), not the
    0600 of a temporary file.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o666 & ~_umask())
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _copy_hashing(src: BinaryIO, dst: BinaryIO) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: src.read(1 << 20), b""):
        digest.update(chunk)
        dst.write(chunk)
    return digest.hexdigest()


def download_file(urls: Sequence[str], dest: str | os.PathLike, sha256: str | None = None) -> Path:
    """Fetch ``dest`` from the first of ``urls`` that answers, verify it, and return its path.

    Each address is tried in turn; a network failure moves on to the next. With ``sha256``
    the file must have that digest, else a ``ValueError`` (a wrong file is not retried from
    another mirror: it means a wrong digest or a tampered file). When no address answers,
    a :class:`DownloadError` names the file, the addresses, the destination and how to use
    a local copy instead.
    """
    dest = Path(dest)
    failures = []
    for url in urls:
        try:
            print(f"gpuconv: downloading {url} -> {dest}", file=sys.stderr)
            with atomic_write(dest) as out, request.urlopen(url, timeout=TIMEOUT_S) as resp:
                got = _copy_hashing(resp, out)
                if sha256 is not None and got != sha256.lower():
                    raise ValueError(f"SHA-256 mismatch for {dest.name} downloaded from {url}: "
                                     f"expected {sha256.lower()}, got {got}; the file was "
                                     f"discarded")
            return dest
        except (OSError, HTTPException) as e:  # URLError, HTTPError, timeouts, cut-off reads
            failures.append(f"{url}: {e}")
    tried = "\n  ".join(failures)
    raise DownloadError(
        f"could not download {dest.name} to {dest.parent}; tried:\n  {tried}\n"
        f"If this machine is offline, copy the file into a local directory and pass that "
        f"directory as root=<directory>.")
