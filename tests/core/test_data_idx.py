"""Tests of orchard.data.idx against hand-built IDX bytes and round trips."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from orchard.data.idx import IDX_DTYPES, IdxFormatError, idx_type_code, read_idx, write_idx

#: The type codes of the IDX specification, with the native dtype each stores.
SPEC_CODES: list[tuple[int, str, str]] = [
    (0x08, "uint8", ">B"),
    (0x09, "int8", ">b"),
    (0x0B, "int16", ">h"),
    (0x0C, "int32", ">i"),
    (0x0D, "float32", ">f"),
    (0x0E, "float64", ">d"),
]


def test_type_code_table_matches_the_specification() -> None:
    assert {code: dtype.newbyteorder("=").name for code, dtype in IDX_DTYPES.items()} == {
        code: name for code, name, _ in SPEC_CODES
    }
    assert all(dtype.byteorder in (">", "|") for dtype in IDX_DTYPES.values())


@pytest.mark.parametrize(("code", "dtype_name", "struct_code"), SPEC_CODES)
def test_write_produces_the_exact_specified_bytes(
    tmp_path: Path, code: int, dtype_name: str, struct_code: str
) -> None:
    values = [[1, 2, 3], [4, 5, 127]]
    array = np.array(values, dtype=dtype_name)
    path = tmp_path / "x.idx"
    write_idx(path, array)
    flat = [v for row in values for v in row]
    expected = (
        bytes([0, 0, code, 2])
        + struct.pack(">II", 2, 3)
        + struct.pack(f">{len(flat)}{struct_code[1]}", *flat)
    )
    assert path.read_bytes() == expected
    assert idx_type_code(array.dtype) == code


@pytest.mark.parametrize(("code", "dtype_name", "struct_code"), SPEC_CODES)
def test_read_parses_hand_built_files(
    tmp_path: Path, code: int, dtype_name: str, struct_code: str
) -> None:
    values = [0, 1, -1 if dtype_name != "uint8" else 255, 100, 7, 3]
    header = bytes([0, 0, code, 3]) + struct.pack(">III", 1, 2, 3)
    payload = struct.pack(f">6{struct_code[1]}", *values)
    path = tmp_path / "hand.idx"
    path.write_bytes(header + payload)
    result = read_idx(path)
    assert result.dtype == np.dtype(dtype_name)
    assert result.dtype.isnative
    assert result.shape == (1, 2, 3)
    assert result.ravel().tolist() == values


def test_gzip_is_chosen_by_file_name(tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_idx(tmp_path / "a.idx.gz", array)
    raw = gzip.decompress((tmp_path / "a.idx.gz").read_bytes())
    assert raw == bytes([0, 0, 8, 2]) + struct.pack(">II", 3, 4) + bytes(range(12))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx.gz"), array)


def test_big_endian_input_is_stored_by_value(tmp_path: Path) -> None:
    array = np.array([1, -2, 300], dtype=">i4")
    write_idx(tmp_path / "be.idx", array)
    assert read_idx(tmp_path / "be.idx").tolist() == [1, -2, 300]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.data(),
    dtype_name=st.sampled_from([name for _, name, _ in SPEC_CODES]),
    compressed=st.booleans(),
)
def test_round_trip_every_type_code(
    tmp_path: Path, data: st.DataObject, dtype_name: str, compressed: bool
) -> None:
    array = data.draw(
        hnp.arrays(
            dtype=np.dtype(dtype_name),
            shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
        )
    )
    path = tmp_path / ("rt.idx.gz" if compressed else "rt.idx")
    write_idx(path, array)
    result = read_idx(path)
    assert result.dtype == array.dtype
    assert result.shape == array.shape
    # Bytes, not values: NaN payloads and signed zeros must survive too.
    assert result.tobytes() == np.ascontiguousarray(array).tobytes()


def _write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_bad_magic_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad-magic.idx", b"\x1f\x8b\x08\x01" + bytes(8))
    with pytest.raises(IdxFormatError, match=r"bad-magic\.idx.*magic"):
        read_idx(path)


def test_unknown_type_code_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "code.idx", bytes([0, 0, 0x0A, 1]) + struct.pack(">I", 1) + b"\0")
    with pytest.raises(IdxFormatError, match=r"code\.idx.*0x0A"):
        read_idx(path)


def test_truncated_data_names_the_file_and_sizes(tmp_path: Path) -> None:
    header = bytes([0, 0, 8, 1]) + struct.pack(">I", 10)
    path = _write(tmp_path, "short.idx", header + bytes(5))
    with pytest.raises(IdxFormatError, match=r"short\.idx: truncated IDX data.*10 bytes.*5"):
        read_idx(path)


@pytest.mark.parametrize("content", [b"", b"\x00\x00", bytes([0, 0, 8, 3]) + bytes(6)])
def test_truncated_headers_are_rejected(tmp_path: Path, content: bytes) -> None:
    path = _write(tmp_path, "hdr.idx", content)
    with pytest.raises(IdxFormatError, match=r"hdr\.idx: truncated"):
        read_idx(path)


def test_trailing_bytes_are_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "long.idx", bytes([0, 0, 8, 1]) + struct.pack(">I", 2) + bytes(3))
    with pytest.raises(IdxFormatError, match=r"long\.idx: 1 unexpected bytes"):
        read_idx(path)


def test_zero_dimensions_are_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "zero.idx", bytes([0, 0, 8, 0]))
    with pytest.raises(IdxFormatError, match="0 dimensions"):
        read_idx(path)


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    write_idx(tmp_path / "full.idx.gz", np.arange(5000, dtype=np.int32))
    content = (tmp_path / "full.idx.gz").read_bytes()
    path = _write(tmp_path, "cut.idx.gz", content[: len(content) // 2])
    with pytest.raises(IdxFormatError, match=r"cut\.idx\.gz: damaged or truncated gzip"):
        read_idx(path)


@pytest.mark.parametrize("dtype_name", ["uint16", "int64", "bool", "complex64"])
def test_unsupported_dtypes_cannot_be_written(tmp_path: Path, dtype_name: str) -> None:
    with pytest.raises(IdxFormatError, match=f"dtype {dtype_name}"):
        write_idx(tmp_path / "x.idx", np.zeros(3, dtype=dtype_name))
    assert list(tmp_path.iterdir()) == []


def test_zero_dimensional_arrays_cannot_be_written(tmp_path: Path) -> None:
    with pytest.raises(IdxFormatError, match="1 to 255 dimensions"):
        write_idx(tmp_path / "x.idx", np.array(3, dtype=np.uint8))
