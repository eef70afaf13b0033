"""The model-file format: one ``.npz`` holding a format name and version, the configuration as
JSON, model-specific arrays and the weights, read with ``allow_pickle=False`` so that loading a
model file can never run code."""

from __future__ import annotations

import contextlib
import errno
import math
import os
import stat
import uuid
import zipfile
from collections.abc import Callable, Mapping

import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "MAX_ENTRIES",
    "MAX_FILE_BYTES",
    "array_to_text",
    "read_npz",
    "text_to_array",
    "write_npz",
]

FORMAT_VERSION = 2
"""Version of the model file layout written by ``save``; ``load`` reads it and every older one.

Version 2 adds ``"cell"`` (``"rnn"``, ``"lstm"`` or ``"gru"``) to the configuration; a version 1
file (no cell) holds a plain RNN."""


def text_to_array(text: str) -> np.ndarray:
    """A string as a uint8 array of its UTF-8 bytes (a plain, pickle-free npz entry)."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def array_to_text(name: str, arr: np.ndarray) -> str:
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise ValueError(f"entry {name!r} must be a 1-D uint8 array, got {arr.dtype} {arr.shape}")
    try:
        return arr.tobytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"entry {name!r} is not UTF-8 text: {exc}") from None


def write_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to exactly ``path`` (no ``.npz`` appended), atomically: a crash never
    leaves a half-written model file behind."""
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.{uuid.uuid4().hex}.tmp"  # beside path, for os.replace
    try:
        with open(tmp, "xb") as f:  # created with the usual permissions (umask)
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


MAX_FILE_BYTES = 1 << 30
"""The largest model file ``load`` reads (1 GiB), and the most its arrays may hold in all once
decompressed: a model of about 250 million float32 weights."""
MAX_ENTRIES = 10_000
"""The most arrays a model file may hold."""
_MAX_HEADER_BYTES = 10_000  # an .npy header's dict is a few dozen bytes
_ARRAY_KINDS = "biuf"  # booleans, integers, floats: never objects, strings or records


def read_npz(
    path: str | os.PathLike[str], accept: Callable[[str], bool] | None = None
) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, read with bounded memory and time.

    The zip directory is read first: only a regular file of at most :data:`MAX_FILE_BYTES`, at
    most :data:`MAX_ENTRIES` entries, each an ``.npy`` whose name ``accept`` takes, stored or
    deflated, their sizes (as the directory declares them) adding up to at most
    :data:`MAX_FILE_BYTES`. Then each entry's ``.npy`` header, before its data: a plain numeric
    dtype, and a shape whose bytes are exactly what the entry holds. Only then the data, never
    more than the declared size (the zip checksum verified); no pickle is ever read.

    Raises:
        FileNotFoundError, IsADirectoryError, PermissionError: the file cannot be opened.
        ValueError: anything else: not a regular file, too large, not a readable npz archive
            (truncated, corrupted, a pickle...), an unexpected entry.
    """
    where = repr(os.fspath(path))
    info = os.stat(path)
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", os.fspath(path))
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{where} is not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise ValueError(f"{where} is {info.st_size} bytes, more than {MAX_FILE_BYTES}")
    try:
        with open(path, "rb") as f:
            if f.read(6) == b"\x93NUMPY":
                raise ValueError("it holds a single array, not an .npz archive")
            f.seek(0)
            archive = zipfile.ZipFile(f)
            entries = archive.infolist()
            _check_directory(entries, accept)
            return {e.filename[:-4]: _read_entry(archive, e) for e in entries}
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:  # whatever zipfile, zlib or np.lib.format fail with
        raise ValueError(f"{where} is not a readable rnnfast model file: {exc}") from None


def _check_directory(entries: list[zipfile.ZipInfo], accept: Callable[[str], bool] | None) -> None:
    if len(entries) > MAX_ENTRIES:
        raise ValueError(f"{len(entries)} entries, more than {MAX_ENTRIES}")
    names = [e.filename for e in entries]
    if len(set(names)) != len(names):
        raise ValueError("an entry name is repeated")
    for e in entries:
        name = e.filename
        if not name.endswith(".npy") or (accept is not None and not accept(name[:-4])):
            raise ValueError(f"unexpected entry {name[:80]!r}")
        if e.flag_bits & 0x1:
            raise ValueError(f"entry {name!r} is encrypted")
        if e.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ValueError(f"entry {name!r} has an unsupported compression")
    total = sum(e.file_size for e in entries)
    if total > MAX_FILE_BYTES:
        raise ValueError(f"its entries hold {total} bytes, more than {MAX_FILE_BYTES}")


def _read_entry(archive: zipfile.ZipFile, entry: zipfile.ZipInfo) -> np.ndarray:
    name = entry.filename
    with archive.open(entry) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(f, max_header_size=_MAX_HEADER_BYTES)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(f, max_header_size=_MAX_HEADER_BYTES)
        else:
            raise ValueError(f"entry {name!r} has .npy version {version}")
        shape, fortran_order, dtype = header
        if dtype.kind not in _ARRAY_KINDS or dtype.hasobject or dtype.fields or dtype.subdtype:
            raise ValueError(
                f"entry {name!r} has dtype {dtype}, not a plain number type (model files are "
                "read with allow_pickle=False)"
            )
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes != entry.file_size - f.tell():
            raise ValueError(
                f"entry {name!r} declares {shape} {dtype} ({nbytes} bytes) but holds "
                f"{entry.file_size - f.tell()} bytes of data"
            )
        data = bytearray(nbytes)
        if f.readinto(data) != nbytes or f.read(1):  # the read to the end checks the CRC
            raise ValueError(f"entry {name!r} is truncated")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran_order else "C")
