"""Serde under fuzzing: random and mutated wire bytes are refused cleanly, never crash.

Property-based (hypothesis) here, coverage-guided (atheris, :mod:`tests.helpers.fuzz`)
for a few seconds too; ``make fuzz`` runs the latter for longer.
"""

from __future__ import annotations

import base64
import importlib.util

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from orchard import serde
from orchard.messages import Result
from orchard.v1 import federation_service_pb2 as pb
from tests.helpers.fuzz import DECODERS, REFUSALS, run_atheris, seed_corpus, serde_target

DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_are_refused_or_decoded_never_crash(data: bytes) -> None:
    serde_target(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(seed_corpus()), st.data())
def test_mutated_valid_messages_are_refused_or_decoded(seed: bytes, data: st.DataObject) -> None:
    mutated = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 8))):
        if not mutated:
            break
        i = data.draw(st.integers(1, len(mutated) - 1)) if len(mutated) > 1 else 0
        mutated[i] = data.draw(st.integers(0, 255))
    serde_target(bytes(mutated))


def test_every_decoder_has_a_seed_and_every_seed_decodes() -> None:
    kinds = {seed[0] for seed in seed_corpus()}
    assert len(kinds) >= len(DECODERS) - 3  # session, status, pull have no seed of their own
    for seed in seed_corpus():
        _, decode = DECODERS[seed[0]]
        decode(seed[1:])  # valid: must not even be refused


def test_found_by_fuzzing_a_zero_byte_tensor_numpy_cannot_shape_is_refused() -> None:
    """atheris found it: 0 bytes announced, but dimensions NumPy cannot allocate."""
    from orchard.v1 import tensor_pb2 as tpb

    header = tpb.ParametersHeader(total_bytes=0)
    header.tensors.add(name="w", dtype=tpb.DATA_TYPE_FLOAT32, shape=[0, 2**62, 2**62])
    with pytest.raises(serde.SerdeError, match=r"'w'.*cannot be allocated"):
        serde.ParametersAssembler(header)
    crash = base64.b64decode(
        "ClsKWQoBYxIBdBgBKAQxAAAAAAAA4D8aOgsKBG5vdGUQCGFjY3VyYWN5EgkRGggAAIBAAACgQA4SDAgBGggB"
        "AAAA/v///wwSCggBGBgYGBgYGBgYGBAIGgQDAAAA"
    )
    serde_target(crash)


arrays_strategy = st.lists(
    st.sampled_from(DTYPES).flatmap(
        lambda dt: hnp.arrays(np.dtype(dt), hnp.array_shapes(min_dims=0, max_dims=3, max_side=5))
    ),
    min_size=0,
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(arrays_strategy, st.integers(1, 64), st.data())
def test_a_result_stream_round_trips_or_a_tampered_one_is_refused(
    arrays: list[np.ndarray], chunk_bytes: int, data: st.DataObject
) -> None:
    names = tuple(f"t{i}" for i in range(len(arrays)))
    result = Result(
        client_id="c", task_id="t", num_examples=3, loss=None, names=names, parameters=arrays
    )
    messages = list(serde.result_to_stream(result, chunk_bytes=chunk_bytes))
    back = serde.result_from_stream(iter(messages))
    assert back.names == names
    for a, b in zip(arrays, back.parameters, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    # Tamper: drop, repeat or swap a chunk, or change its index, offset or data.
    chunks = messages[1:]
    if not chunks:
        return
    i = data.draw(st.integers(0, len(chunks) - 1))
    how = data.draw(st.sampled_from(["drop", "repeat", "index", "offset", "truncate", "extend"]))
    tampered = [pb.PushResultRequest.FromString(m.SerializeToString()) for m in messages]
    target = tampered[1 + i]
    if how == "drop":
        del tampered[1 + i]
    elif how == "repeat":
        tampered.insert(1 + i, target)
    elif how == "index":
        target.chunk.tensor_index += data.draw(st.integers(1, 5))
    elif how == "offset":
        target.chunk.offset += data.draw(st.integers(1, 5))
    elif how == "truncate":
        target.chunk.data = target.chunk.data[:-1]
    else:
        target.chunk.data = target.chunk.data + b"\x00"
    with pytest.raises(REFUSALS):
        serde.result_from_stream(iter(tampered))


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
def test_a_short_coverage_guided_run_finds_no_crash() -> None:
    figures = run_atheris(seconds=3)
    assert not figures["crashed"], figures["tail"]
    assert isinstance(figures["inputs"], int) and figures["inputs"] > 1000
