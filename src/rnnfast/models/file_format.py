"""The model-file format: one ``.npz`` holding a format name and version, the configuration as
JSON, model-specific arrays and the weights, read with ``allow_pickle=False`` so that loading a
model file can never run code."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Mapping

import numpy as np

__all__ = ["FORMAT_VERSION", "array_to_text", "read_npz", "text_to_array", "write_npz"]

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


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, read with ``allow_pickle=False``.

    Raises:
        FileNotFoundError, IsADirectoryError, PermissionError: the file cannot be opened.
        ValueError: the file is not a readable npz archive (truncated, corrupted, a pickle...).
    """
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not an .npz archive")
        with loaded:
            return {name: loaded[name] for name in loaded.files}
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:  # whatever zipfile, zlib or np.lib.format fail with
        raise ValueError(
            f"{os.fspath(path)!r} is not a readable rnnfast model file: {exc}"
        ) from exc
