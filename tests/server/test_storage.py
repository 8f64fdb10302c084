"""Crash-safe files: the checkpoint archive is what np.load reads, written without copies."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from orchard_server.storage import atomic_write_npz


def test_the_archive_loads_back_every_dtype_and_shape(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {
        "weights": rng.standard_normal((300, 70)).astype(np.float32),
        "transposed": rng.standard_normal((40, 30)).T,  # not C-contiguous
        "half": rng.standard_normal(17).astype(np.float16),
        "scalar": np.array(3.5),
        "empty": np.zeros((0, 4), dtype=np.int64),
        "flags": np.array([True, False, True]),
        "meta": np.frombuffer(b'{"round": 3}', dtype=np.uint8),
        "big": rng.standard_normal(3 << 18).astype(np.float32),  # several write slices
    }
    path = tmp_path / "checkpoint.npz"
    atomic_write_npz(path, arrays)
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(arrays)
        for name, array in arrays.items():
            loaded = npz[name]
            assert loaded.dtype == array.dtype and loaded.shape == array.shape, name
            np.testing.assert_array_equal(loaded, array)


def test_an_object_array_is_refused_and_the_old_file_kept(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.npz"
    atomic_write_npz(path, {"a": np.arange(3)})
    with pytest.raises(ValueError, match="'bad' holds Python objects"):
        atomic_write_npz(path, {"a": np.arange(4), "bad": np.array([{}, []], dtype=object)})
    with np.load(path) as npz:
        np.testing.assert_array_equal(npz["a"], np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.npz"]  # no temporary left


def test_writing_allocates_no_copy_of_the_arrays(tmp_path: Path) -> None:
    model = np.ones(8 << 20, dtype=np.float32)  # 32 MiB
    tracemalloc.start()
    try:
        atomic_write_npz(tmp_path / "checkpoint.npz", {"param_0": model})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # np.savez made a 16 MiB block per write (tobytes) here
    assert peak < 2 << 20, f"{peak / 2**20:.1f} MiB allocated while writing a 32 MiB array"
