"""Where the writing side's files live: a local folder, or a URL TensorBoard reads (`s3://`,
`gs://`, any fsspec protocol), with or without TensorFlow.

Every file the callbacks write (event files, the run claim file) goes through here. Remote URLs
go through TensorBoard's own filesystem layer (`tensorboard.compat.tensorflow_stub.io.gfile`):
its S3 support uses boto3 and honours `S3_ENDPOINT` (an S3-compatible server), and other
protocols go to fsspec. That layer is what `tensorboard` reads with where TensorFlow is not
installed, so what is written here is read back by the same code.

Failures are `OSError`s wherever the file lives (a remote one's cause is chained: a botocore
error, say). Remote objects cannot be appended to: a file is written whole (`write_bytes`),
and a writer that grows a file (`tb_cnnviz.events`) writes a new object for each part instead.

Example:
    >>> import tempfile
    >>> folder = join(tempfile.mkdtemp(), "run")
    >>> check_writable(folder, "log_dir")
    >>> write_bytes(join(folder, "a.txt"), b"hello")
    >>> read_bytes(join(folder, "a.txt")), listdir(folder)
    (b'hello', ['a.txt'])
"""

from __future__ import annotations

import contextlib
import os
import posixpath

__all__ = [
    "check_writable",
    "is_remote",
    "join",
    "listdir",
    "makedirs",
    "read_bytes",
    "size",
    "write_bytes",
]


def is_remote(path: str) -> bool:
    """Whether `path` is a URL (`s3://bucket/logs`) rather than a local path.

    Example:
        >>> is_remote("s3://bucket/logs"), is_remote("logs/run1")
        (True, False)
    """
    return "://" in str(path)


@contextlib.contextmanager
def _remote(path: str):
    """Turns a remote filesystem's own errors into `OSError`, as local files raise."""
    try:
        yield _gfile()
    except OSError:
        raise
    except Exception as e:
        raise OSError(f"{path}: {_describe(e)}") from e


def _gfile():
    # TensorBoard's layer without TensorFlow, whether or not TensorFlow is installed:
    # TensorFlow's own file system has had no s3:// since 2.6.
    from tensorboard.compat.tensorflow_stub.io import gfile

    # Its S3 layer reads S3_ENDPOINT once, when the module is first imported: a process that
    # imported TensorBoard before setting it (a notebook, a test session) would write to AWS
    # instead. A fresh one is registered whenever the setting changed since.
    s3 = getattr(gfile, "S3FileSystem", None)
    if s3 is not None:
        try:
            current = gfile.get_filesystem("s3://")
        except Exception:  # boto3 missing: the S3 layer was never registered
            current = None
        endpoint = os.environ.get("S3_ENDPOINT")
        if current is not None and getattr(current, "_s3_endpoint", endpoint) != endpoint:
            gfile.register_filesystem("s3", s3())
    return gfile


def join(path: str, *names: str) -> str:
    """`path` and `names` joined with the separator of where `path` lives.

    Example:
        >>> join("s3://bucket/logs", "run1", "train")
        's3://bucket/logs/run1/train'
    """
    if is_remote(path):
        return posixpath.join(path, *names)
    return os.path.join(path, *names)


def makedirs(path: str) -> None:
    """Creates the folder `path` and its parents (on a bucket: a folder marker)."""
    if is_remote(path):
        with _remote(path) as gfile:
            gfile.makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def listdir(path: str) -> list[str]:
    """The names in the folder `path`, sorted."""
    if is_remote(path):
        with _remote(path) as gfile:
            return sorted(gfile.listdir(path))
    return sorted(os.listdir(path))


def size(path: str) -> int:
    """The size of the file `path` in bytes."""
    if is_remote(path):
        with _remote(path) as gfile:
            return int(gfile.stat(path).length)
    return os.path.getsize(path)


def read_bytes(path: str) -> bytes:
    """The whole content of the file `path`.

    Raises:
        FileNotFoundError: If there is no such file (remote ones included).
        OSError: If it cannot be read.
    """
    if not is_remote(path):
        with open(path, "rb") as f:
            return f.read()
    with _remote(path) as gfile:
        if not gfile.exists(path):
            raise FileNotFoundError(path)
        with gfile.GFile(path, "rb") as f:
            return f.read()


def write_bytes(path: str, data: bytes) -> None:
    """Writes `data` as the whole file `path`, atomically: readers see the old content or the
    new one (locally a temporary file then `os.replace`; an object store puts objects whole)."""
    if is_remote(path):
        with _remote(path) as gfile:
            gfile.get_filesystem(path).write(path, bytes(data), binary_mode=True)
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def check_writable(path: str, argument: str, value: str | None = None) -> None:
    """Creates the folder `path` and checks that it can be written, before training starts.

    Args:
        path: The folder.
        argument: The name of the argument `path` came from, for the message.
        value: The argument's value, for the message (`path` when None).

    Raises:
        ValueError: If the folder cannot be created or written: a missing bucket, missing or
            refused credentials, a protocol nothing here can write, a read-only folder. The
            message names the cause and ends with `Received: argument=path`.
    """
    received = f"Received: {argument}={path if value is None else value!r}"
    if not is_remote(path):
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise ValueError(f"{argument} cannot be created: {e}. {received}") from e
        if not os.access(path, os.W_OK):
            raise ValueError(f"{argument} is not writable. {received}")
        return
    try:
        gfile = _gfile()
        gfile.get_filesystem(path)
    except (ImportError, ValueError) as e:
        scheme = str(path).split("://", 1)[0]
        hint = "boto3" if scheme == "s3" else f"an fsspec implementation of {scheme}://"
        raise ValueError(
            f"{argument} is a {scheme}:// URL, which needs {hint} installed ({e}). {received}"
        ) from e
    try:
        # Lists the folder (a missing bucket or missing credentials fail here), then writes
        # its folder marker where there is none yet.
        gfile.makedirs(path)
    except Exception as e:
        raise ValueError(
            f"{argument} cannot be written: {_describe(e)}. Check that the bucket exists and "
            "that credentials for it are set (for an S3-compatible server, also S3_ENDPOINT). "
            f"{received}"
        ) from e


def _describe(error: Exception) -> str:
    """A storage error in one line: S3's error code (`NoSuchBucket`, `AccessDenied`) first."""
    code = getattr(error, "response", {}).get("Error", {}).get("Code")
    text = f"{type(error).__name__}: {error}"
    return f"{code} ({text})" if code else text
