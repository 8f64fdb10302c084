"""The gRPC face of the server: decode, call the domain, encode. Nothing else.

Each method maps domain errors to the status codes documented on the RPC in
``protos/orchard/v1/federation_service.proto``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from orchard import serde
from orchard.messages import API_VERSION, FederationState, Finished, Idle, Role, Session
from orchard.spec import ModelSpec, SpecError, TensorSpec
from orchard.v1 import federation_service_pb2 as pb
from orchard.v1 import federation_service_pb2_grpc as pb_grpc
from orchard_server.federation import Federation
from orchard_server.grpc_pool import GrpcClientPool

log = logging.getLogger("orchard.server")

#: API major versions this server serves.
SUPPORTED_MAJOR = API_VERSION.split(".")[0]


@dataclass(frozen=True, slots=True)
class Hosted:
    """A federation and the pool of its gRPC clients."""

    federation: Federation
    pool: GrpcClientPool


class FederationServicer(pb_grpc.FederationServiceServicer):
    """Implements orchard.v1.FederationService over the hosted federations."""

    def __init__(
        self,
        hosted: Mapping[str, Hosted],
        *,
        heartbeat_interval: float,
        max_poll_seconds: float,
        max_upload_bytes: int,
        max_concurrent_uploads: int,
    ) -> None:
        self._hosted = dict(hosted)
        self._heartbeat_interval = heartbeat_interval
        self._max_poll = max_poll_seconds
        self._max_upload = max_upload_bytes
        self._uploads = asyncio.Semaphore(max_concurrent_uploads)

    def _find(self, client_id: str) -> Hosted | None:
        for hosted in self._hosted.values():
            if hosted.pool.known(client_id):
                return hosted
        return None

    async def Join(
        self,
        request: pb.JoinRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.JoinResponse:
        major = request.api_version.split(".")[0]
        if major != SUPPORTED_MAJOR:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"API version {request.api_version or '(none)'!r} is not supported; this server "
                f"speaks {API_VERSION} (orchard.v1); upgrade or downgrade the client",
            )
        try:
            info = serde.join_from_proto(request)
        except serde.SerdeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        hosted = self._hosted.get(info.federation)
        if hosted is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no federation named {info.federation!r} (this server hosts: "
                f"{', '.join(sorted(self._hosted))})",
            )
        fed = hosted.federation
        if fed.config.auth_token and info.auth_token != fed.config.auth_token:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"federation {info.federation!r} requires a valid auth token",
            )
        if info.model_spec is not None:
            difference = fed.spec.first_difference(info.model_spec)
            if difference is not None:
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"model spec mismatch with federation {info.federation!r} "
                    f"(model {fed.spec.model_id!r}): {difference}",
                )
        if info.partition_id is not None:
            partition = fed.record_partition(
                info.instance_id, info.partition_id, info.num_partitions or 0
            )
        else:
            partition = fed.assign_partition(info.instance_id, hosted.pool.clients())
        client = hosted.pool.join(info, partition)
        return serde.session_to_proto(
            Session(
                client_id=client.client_id,
                api_version=API_VERSION,
                heartbeat_interval=self._heartbeat_interval,
                model_spec=fed.spec,
                partition_id=partition,
                num_partitions=fed.config.partitions,
                state=fed.state,
            )
        )

    async def Heartbeat(
        self,
        request: pb.HeartbeatRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.HeartbeatResponse:
        hosted = self._find(request.client_id)
        if hosted is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"unknown session {request.client_id!r}; join again"
            )
        fed = hosted.federation
        return pb.HeartbeatResponse(
            state=serde.state_to_proto(fed.state), rounds_completed=fed.rounds_completed
        )

    async def PullTask(
        self,
        request: pb.PullTaskRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.PullTaskResponse]:
        hosted = self._find(request.client_id)
        if hosted is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"unknown session {request.client_id!r}; join again"
            )
        fed = hosted.federation
        chunk = request.max_chunk_bytes or serde.DEFAULT_CHUNK_BYTES
        if not 0 < chunk <= serde.MAX_CHUNK_BYTES:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"max_chunk_bytes {chunk} outside 1..{serde.MAX_CHUNK_BYTES}",
            )
        wait = min(max(request.wait_seconds, 0.0), self._max_poll)
        task = None
        if fed.state not in (FederationState.FINISHED, FederationState.FAILED):
            task = await hosted.pool.next_task(request.client_id, wait)
        if task is None:
            if fed.state in (FederationState.FINISHED, FederationState.FAILED):
                yield serde.finished_to_proto(Finished(state=fed.state, reason=fed.reason))
            else:
                yield serde.idle_to_proto(Idle(state=fed.state))
            return
        for message in serde.task_to_stream(task, chunk):
            yield message

    async def PushResult(
        self,
        request_iterator: AsyncIterator[pb.PushResultRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.PushResultResponse:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("item") != "header":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "PushResult must start with a ResultHeader"
            )
        header = first.header
        hosted = self._find(header.client_id)
        if hosted is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"unknown session {header.client_id!r}; join again"
            )
        pool = hosted.pool
        try:
            task = pool.open_task(header.client_id, header.task_id)
        except KeyError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc.args[0]))
        except LookupError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        async with self._uploads:
            try:
                assembler = serde.ParametersAssembler(header.parameters, max_bytes=self._max_upload)
                if header.parameters.tensors:
                    _check_header(hosted, assembler.specs)
                async for message in request_iterator:
                    if message.WhichOneof("item") != "chunk":
                        raise serde.SerdeError("only chunks may follow the result header")
                    assembler.add(message.chunk)
                    pool.known(header.client_id)
                arrays = assembler.finish()
                result = serde.result_from_header(header, arrays, assembler.names)
                pool.deliver(header.client_id, result)
            except (serde.SerdeError, SpecError) as exc:
                pool.reject(header.client_id, header.task_id, str(exc))
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"result of task {task.task_id} rejected: {exc}",
                )
            except LookupError as exc:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return pb.PushResultResponse(message=f"result of task {task.task_id} accepted")

    async def Leave(
        self,
        request: pb.LeaveRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.LeaveResponse:
        hosted = self._find(request.client_id)
        if hosted is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown session {request.client_id!r}")
        reason = request.reason or "no reason given"
        name = next(
            (
                c.display_name
                for r in Role
                for c in hosted.pool.clients(r)
                if c.client_id == request.client_id
            ),
            request.client_id,
        )
        # A fatal reason is logged once, in the federation's failure line.
        hosted.pool.drop(
            request.client_id, "it cannot take part" if request.fatal else f"left ({reason})"
        )
        if request.fatal:
            hosted.federation.fail(f"{name} cannot take part: {reason}")
        return pb.LeaveResponse()


def _check_header(hosted: Hosted, specs: tuple[TensorSpec, ...]) -> None:
    """Refuse a result whose announced tensors differ from the spec before reading its bytes."""
    spec = hosted.federation.spec
    if tuple(specs) != spec.tensors:
        difference = spec.first_difference(ModelSpec(spec.model_id, specs))
        raise SpecError(difference or "announced tensors differ from the model spec")
