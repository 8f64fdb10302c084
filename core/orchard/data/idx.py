"""Reading and writing IDX files, the format of MNIST and its drop-in replacements.

The format (LeCun et al., http://yann.lecun.com/exdb/mnist/): a 4-byte magic
number -- two zero bytes, a type code, the number of dimensions -- then one
big-endian unsigned 32-bit size per dimension, then the data in C order,
big-endian. Files whose name ends in ``.gz`` are gzip-compressed, as the
published MNIST files are.

Parsing is strict on purpose: a truncated download or a file of the wrong
dataset must fail here with the file's name, not later as a silently
mis-shaped array or a model that does not learn.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from orchard.files import atomic_write

__all__ = [
    "IDX_DTYPES",
    "IdxFormatError",
    "idx_type_code",
    "parse_idx",
    "read_idx",
    "write_idx",
]

#: IDX type code -> big-endian NumPy dtype of the stored values.
IDX_DTYPES: dict[int, np.dtype[np.generic]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_CODE_BY_KIND_AND_SIZE: dict[tuple[str, int], int] = {
    (dtype.kind, dtype.itemsize): code for code, dtype in IDX_DTYPES.items()
}

_MAX_DIM = 0xFFFFFFFF


class IdxFormatError(ValueError):
    """A file is not a valid IDX file, or an array cannot be stored as one."""


def _is_gzip_name(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def _read_bytes(path: Path) -> bytes:
    try:
        if _is_gzip_name(path):
            with gzip.open(path, "rb") as stream:
                return stream.read()
        return path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise IdxFormatError(f"{path}: damaged or truncated gzip data ({exc})") from exc


def read_idx(path: Path | str) -> np.ndarray:
    """Read an IDX file (gzip-compressed if the name ends in ``.gz``).

    Returns a C-contiguous array in native byte order whose dtype matches the
    file's type code (``uint8`` for MNIST images and labels).

    Raises:
        IdxFormatError: bad magic number, unknown type code, truncated data,
            trailing bytes or damaged gzip data; the message names the file.
        OSError: the file cannot be opened.
    """
    path = Path(path)
    return parse_idx(_read_bytes(path), source=str(path))


def parse_idx(data: bytes, *, source: str) -> np.ndarray:
    """Parse the (uncompressed) bytes of an IDX file; ``source`` names it in errors.

    Separate from :func:`read_idx` so a caller that already holds the bytes
    (for example to checksum them) does not decompress the file twice.
    """
    if len(data) < 4:
        raise IdxFormatError(
            f"{source}: truncated IDX file ({len(data)} bytes, the magic number alone takes 4)"
        )
    zero1, zero2, code, ndim = data[0], data[1], data[2], data[3]
    if zero1 != 0 or zero2 != 0:
        raise IdxFormatError(
            f"{source}: bad IDX magic number 0x{data[:4].hex()} (must start with two zero "
            "bytes; is this a compressed file without a .gz name, or not an IDX file?)"
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise IdxFormatError(f"{source}: unknown IDX type code 0x{code:02X} (known: {known})")
    if ndim == 0:
        raise IdxFormatError(f"{source}: IDX header declares 0 dimensions")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise IdxFormatError(
            f"{source}: truncated IDX header ({len(data)} bytes, {ndim} dimensions "
            f"need {header_size})"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    dtype = IDX_DTYPES[code]
    count = math.prod(shape)
    expected = count * dtype.itemsize
    actual = len(data) - header_size
    if actual < expected:
        raise IdxFormatError(
            f"{source}: truncated IDX data: shape {shape} of {dtype.newbyteorder('=').name} "
            f"needs {expected} bytes, the file has {actual}"
        )
    if actual > expected:
        raise IdxFormatError(
            f"{source}: {actual - expected} unexpected bytes after the IDX data of shape {shape}"
        )
    values = np.frombuffer(data, dtype=dtype, count=count, offset=header_size)
    native: np.ndarray = values.reshape(shape).astype(dtype.newbyteorder("="), copy=True)
    return native


def idx_type_code(dtype: np.dtype[np.generic]) -> int:
    """The IDX type code of ``dtype``; raises IdxFormatError if IDX cannot store it."""
    code = _CODE_BY_KIND_AND_SIZE.get((dtype.kind, dtype.itemsize))
    if code is None:
        supported = ", ".join(d.newbyteorder("=").name for d in IDX_DTYPES.values())
        raise IdxFormatError(f"dtype {dtype} cannot be stored in IDX (supported: {supported})")
    return code


def write_idx(path: Path | str, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzip-compressed if the name ends in ``.gz``.

    The file is written to a temporary name and renamed, so readers never see
    a partial file. Compressed output is reproducible (gzip mtime 0).

    Raises:
        IdxFormatError: the dtype has no IDX type code, the array is 0-d or
            has more than 255 dimensions, or a dimension exceeds 2**32 - 1.
    """
    path = Path(path)
    arr = np.asarray(array)
    code = idx_type_code(arr.dtype)
    if arr.ndim == 0 or arr.ndim > 255:
        raise IdxFormatError(
            f"{path}: IDX stores arrays with 1 to 255 dimensions, got a {arr.ndim}-d array"
        )
    if any(d > _MAX_DIM for d in arr.shape):
        raise IdxFormatError(f"{path}: dimension of shape {arr.shape} exceeds 2**32 - 1")
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = np.ascontiguousarray(arr, dtype=IDX_DTYPES[code]).tobytes()

    def write(raw: BinaryIO) -> None:
        if _is_gzip_name(path):
            inner_name = path.name[: -len(".gz")]
            with gzip.GzipFile(filename=inner_name, mode="wb", fileobj=raw, mtime=0) as gz:
                gz.write(header)
                gz.write(payload)
        else:
            raw.write(header)
            raw.write(payload)

    atomic_write(path, write)
