"""Fuzz family of the model files: loading damaged, tampered and foreign files."""

from __future__ import annotations

import atexit
import functools
import json
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from fuzz_common import (
    Case,
    EntryPoint,
    draw_faults,
)
from hypothesis import strategies as st

import rnnfast

# ---------------------------------------------------------------------------------------------
# Model files: CharRNN.load and SequenceRegressor.load on damaged, tampered and foreign files.
# The outcome must be a ValueError or a model; loading must never unpickle (a pickled payload
# records it if it ever runs).

UNPICKLED: list[str] = []


class Payload:
    """Unpickling this appends to UNPICKLED: proof that a loader ran code from a file."""

    def __reduce__(self):
        return (UNPICKLED.append, ("a model file ran code",))


MODEL_FILE_DIR = Path(tempfile.mkdtemp(prefix="rnnfast-fuzz-"))
atexit.register(shutil.rmtree, MODEL_FILE_DIR, True)


def make_model(kind: str) -> Any:
    """A small model of ``kind``, "CharRNN" or "SequenceRegressor" (with a normalization, as
    after fitting)."""
    if kind == "CharRNN":
        return rnnfast.CharRNN("abc\n", hidden_size=4, num_layers=2, seed=0)
    model = rnnfast.SequenceRegressor(2, hidden_size=4, seed=0)
    model.mean, model.std = np.zeros(2), np.ones(2)
    return model


@functools.cache
def model_file(kind: str) -> tuple[dict[str, np.ndarray], bytes]:
    """The entries and the bytes of a saved model of ``kind`` (made once per process)."""
    path = MODEL_FILE_DIR / f"good-{kind}.npz"
    make_model(kind).save(path)
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}, path.read_bytes()


MODEL_FILE_DAMAGE = ("truncate", "flip_bytes", "append", "empty", "random_bytes", "pickle_file")
MODEL_FILE_TAMPER = (
    "version",
    "format",
    "config_json",
    "config_keys",
    "weight_shape",
    "weight_dtype",
    "weight_nan",
    "object_entry",
    "missing_entry",
    "extra_entry",
    "config_size",
    "config_deep",
    "vocab_text",
    "header_edit",
    "entry_swap",
)
MODEL_FILE_TARGETS = [
    *(("damage", n) for n in MODEL_FILE_DAMAGE),
    *(("tamper", n) for n in MODEL_FILE_TAMPER),
]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _rewrite_headers(path: Path, entries: dict[str, np.ndarray], headers: dict) -> None:
    """Rewrite the npz at ``path`` with the named entries' .npy headers declaring another
    shape (the data unchanged): what a header edit by hand gives."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for key, value in entries.items():
            if key not in headers:
                with z.open(f"{key}.npy", "w") as f:
                    np.lib.format.write_array(f, np.asarray(value), allow_pickle=True)
                continue
            header = {
                "descr": np.lib.format.dtype_to_descr(value.dtype),
                "fortran_order": False,
                "shape": headers[key],
            }
            with z.open(f"{key}.npy", "w") as f:
                np.lib.format.write_array_header_1_0(f, header)
                f.write(np.ascontiguousarray(value).tobytes())


@st.composite
def model_file_cases(draw: st.DrawFn, fault: tuple[str, str] | None = None) -> Case:
    """CharRNN.load or SequenceRegressor.load of a saved model, damaged or tampered (or not)."""
    kind = draw(st.sampled_from(["CharRNN", "SequenceRegressor"]))
    loader = getattr(rnnfast, kind).load
    entries, raw = model_file(kind)
    entries = dict(entries)
    faults = draw_faults(draw, MODEL_FILE_TARGETS, fault)
    notes = [f"{kind}.load"]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    weight = draw(st.sampled_from(sorted(k for k in entries if k.startswith("param/"))))
    data: bytes | None = None
    headers: dict[str, tuple[int, ...]] = {}  # entries written with a lying .npy header
    for kind, name in faults:
        notes.append(f"FAULT {kind} {name}")
        if name.startswith("weight") or name in ("object_entry", "missing_entry"):
            if weight not in entries or entries[weight].dtype == object:
                continue  # that weight is already gone or replaced
        if kind == "tamper":
            if name == "version":
                # versions 1 and 2 are read
                entries["version"] = np.array(draw(st.sampled_from([0, 3, -1, 2**40])))
            elif name == "format":
                entries["format"] = np.frombuffer(b"SequenceRegressor", np.uint8).copy()
            elif name == "config_json":
                entries["config"] = np.frombuffer(b'{"vocab": ', np.uint8).copy()
            elif name == "config_keys":
                entries["config"] = np.frombuffer(b'{"a": 1}', np.uint8).copy()
            elif name == "weight_shape":
                entries[weight] = np.zeros((*entries[weight].shape, 2), entries[weight].dtype)
            elif name == "weight_dtype":
                entries[weight] = entries[weight].astype(np.float16)
            elif name == "weight_nan":
                entries[weight] = np.full_like(entries[weight], np.nan)
            elif name == "object_entry":
                entries[weight] = np.array([Payload()], dtype=object)
            elif name == "missing_entry":
                entries.pop(weight)
            elif name == "config_size":  # a size no stored weight holds: nothing may be built
                config = json.loads(entries["config"].tobytes())
                key = draw(st.sampled_from(sorted(k for k, v in config.items() if _is_int(v))))
                config[key] = draw(st.sampled_from([5, 12_000, 200_000, 10**9, 3e8, 2**70, -1]))
                entries["config"] = np.frombuffer(json.dumps(config).encode(), np.uint8).copy()
            elif name == "config_deep":
                depth = draw(st.integers(5, 50_000))
                text = '{"a": ' * depth + "1" + "}" * depth
                entries["config"] = np.frombuffer(text.encode(), np.uint8).copy()
            elif name == "vocab_text":
                if "extra/vocab" in entries:  # a lone surrogate, or beyond U+10FFFF
                    code = draw(st.sampled_from([0xD800, 0xDCFF, 0xDFFF, 0x110000, 2**32 - 1]))
                    entries["extra/vocab"] = np.array([97, code], np.uint32)
                else:
                    entries["extra/mean"] = np.zeros(draw(st.integers(0, 10**6)))
            elif name == "header_edit":  # the .npy header's shape no longer matches its data
                headers[weight] = tuple(int(rng.integers(0, 2**40)) for _ in range(2))
            elif name == "entry_swap":
                a, b = rng.choice(sorted(entries), 2, replace=False)
                entries[a], entries[b] = entries[b], entries[a]
            else:
                entries["param/extra"] = np.zeros(3, np.float32)
        elif name == "truncate":
            data = raw[: draw(st.integers(0, len(raw) - 1))]
        elif name == "flip_bytes":
            buf = bytearray(raw)
            for i in rng.integers(0, len(buf), draw(st.integers(1, 8))):
                buf[i] ^= 1 << int(rng.integers(0, 8))
            data = bytes(buf)
        elif name == "append":
            data = raw + rng.bytes(draw(st.integers(1, 64)))
        elif name == "empty":
            data = b""
        elif name == "random_bytes":
            data = rng.bytes(draw(st.integers(1, 512)))
        else:
            data = pickle.dumps(Payload())
    path = MODEL_FILE_DIR / f"case-{len(notes)}-{rng.integers(2**62)}.npz"
    if data is None:
        with open(path, "wb") as f:
            np.savez(f, **entries)  # object entries are pickled here, as an attacker would
        if headers:
            _rewrite_headers(path, entries, headers)
    else:
        path.write_bytes(data)

    def call() -> tuple[np.ndarray, ...]:
        try:
            model = loader(path)
        finally:
            path.unlink()
        return tuple(model.state_dict().values())

    def check(result: tuple[np.ndarray, ...]) -> None:
        for w in result:
            assert np.all(np.isfinite(w)), "a loaded model has non-finite weights"

    def judged() -> Any:
        try:
            return call()
        finally:
            assert not UNPICKLED, f"loading ran code from the file: {'; '.join(notes)}"

    return Case(
        call=judged,
        expected=None,
        fault_names=None,
        inputs=(),
        description="; ".join(notes),
        coverage=f"{faults[0][0]}:{faults[0][1]}" if len(faults) == 1 else None,
        check=check,
    )


ENTRY_POINTS: dict[str, EntryPoint] = {
    "model files": EntryPoint(model_file_cases, tuple(MODEL_FILE_TARGETS), ci_cases=200),
}
