"""Enrolled client credentials (hashed at rest) and mutual TLS identities."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from orchard import serde
from orchard.examples.logreg import logreg_spec
from orchard.messages import API_VERSION, JoinInfo
from orchard.v1 import federation_service_pb2_grpc as pb_grpc
from orchard_server.admission import Admission, AdmissionError, AdmissionPolicy, Refusal
from orchard_server.app import OrchardServer
from orchard_server.cli import main as server_main
from orchard_server.config import ConfigError, FederationConfig, ServerConfig
from orchard_server.credentials import (
    Credentials,
    CredentialsError,
    enroll,
    hash_secret,
    verify_secret,
)
from orchard_server.grpc_pool import GrpcClientPool
from orchard_server.partitions import PartitionRegistry

SPEC = logreg_spec()
REPO = Path(__file__).resolve().parents[2]


def test_secrets_are_hashed_with_salt_and_verified() -> None:
    # A secret long enough that no base64 salt or hash contains it by chance
    # ("pw" did: about 2% of hashes hold those two letters somewhere).
    secret = "plain-text-secret"
    one, two = hash_secret(secret), hash_secret(secret)
    assert one != two and one.startswith("scrypt$") and secret not in one
    assert verify_secret(secret, one) and verify_secret(secret, two)
    assert not verify_secret("plain-text-secreT", one)
    assert not verify_secret(secret, "scrypt$garbage") and not verify_secret(secret, "md5$x")


def test_enroll_keeps_only_hashes_at_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "clients.json"
    secret = enroll(path, "alice")
    assert server_main(["enroll", "--credentials-file", str(path), "bob"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("bob:")
    text = path.read_text()
    assert secret not in text and token.split(":", 1)[1] not in text
    assert set(json.loads(text)) == {"alice", "bob"}
    assert path.stat().st_mode & 0o077 == 0
    credentials = Credentials.load(path)
    assert credentials.verify_token(f"alice:{secret}") == "alice"
    assert credentials.verify_token(token) == "bob"
    assert credentials.verify_token(f"bob:{secret}") is None
    assert credentials.verify_token(secret) is None
    with pytest.raises(CredentialsError, match="client name"):
        enroll(path, "../evil")
    assert server_main(["enroll", "--credentials-file", str(path), "no spaces"]) == 2


def test_a_federation_with_enrolled_clients_admits_only_them(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    secret = enroll(path, "alice")
    policy = AdmissionPolicy(
        federation="f",
        spec=SPEC,
        partitions=PartitionRegistry(2),
        credentials=Credentials.load(path),
    )
    admission = Admission([GrpcClientPool(policy, heartbeat_timeout=10.0)])

    def join(**kw: Any) -> JoinInfo:
        return JoinInfo(api_version=API_VERSION, federation="f", instance_id="i", **kw)

    assert admission.admit(join(auth_token=f"alice:{secret}")).identity == "alice"
    assert admission.admit(join(peer_identity="alice")).identity == "alice"
    for bad in (join(), join(auth_token="alice:guess"), join(peer_identity="mallory")):
        with pytest.raises(AdmissionError) as err:
            admission.admit(bad)
        assert err.value.kind is Refusal.UNAUTHENTICATED
    # Strangers are not told the protected federation exists.
    with pytest.raises(AdmissionError) as err:
        admission.admit(JoinInfo(api_version=API_VERSION, federation="g", instance_id="i"))
    assert "'f'" not in err.value.message
    base: dict[str, Any] = {"name": "f", "model": "logreg", "tensors": SPEC.tensors}
    with pytest.raises(ConfigError, match="not both"):
        FederationConfig(**base, auth_token="t", credentials_file=path)
    (tmp_path / "bad.json").write_text('{"alice": "plain"}')
    with pytest.raises(ConfigError, match="scrypt"):
        FederationConfig(**base, credentials_file=tmp_path / "bad.json")


# --- mutual TLS, end to end on loopback --------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    directory = tmp_path_factory.mktemp("certs")
    subprocess.run(
        [str(REPO / "docker" / "dev-certs.sh"), str(directory), "localhost", "alice,mallory"],
        check=True,
        capture_output=True,
    )
    return directory


class TlsServer:
    def __init__(self, config: ServerConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = OrchardServer(config)
        self.port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)

    def members(self) -> list[str]:
        async def names() -> list[str]:
            return [m.display_name for m in self.server.hosted["blobs"].pool.members()]

        return asyncio.run_coroutine_threadsafe(names(), self.loop).result(30)

    def close(self) -> None:
        assert self.server.server is not None
        asyncio.run_coroutine_threadsafe(self.server.server.stop(grace=0), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture
def mtls(certs: Path, tmp_path: Path) -> Iterator[TlsServer]:
    credentials = tmp_path / "clients.json"
    enroll(credentials, "alice")  # mallory has a valid certificate but is not enrolled
    server = TlsServer(
        ServerConfig(
            address="127.0.0.1:0",
            state_dir=tmp_path / "state",
            tls_cert=certs / "server.pem",
            tls_key=certs / "server.key",
            tls_client_ca=certs / "ca.pem",
            federations=(
                FederationConfig(
                    name="blobs",
                    model="logreg",
                    tensors=SPEC.tensors,
                    min_fit_clients=1,
                    min_evaluate_clients=1,
                    min_available_clients=1,
                    credentials_file=credentials,
                ),
            ),
        )
    )
    yield server
    server.close()


def _join(server: TlsServer, certs: Path, client: str | None) -> Any:
    key = cert = None
    if client is not None:
        key = (certs / f"client-{client}.key").read_bytes()
        cert = (certs / f"client-{client}.pem").read_bytes()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca.pem").read_bytes(), private_key=key, certificate_chain=cert
    )
    with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
        info = JoinInfo(
            api_version=API_VERSION,
            federation="blobs",
            instance_id=f"inst-{client}",
            display_name="whatever I claim",
            model_spec=SPEC,
        )
        return pb_grpc.FederationServiceStub(channel).Join(serde.join_to_proto(info), timeout=10)


def test_mutual_tls_the_certificate_is_the_identity(mtls: TlsServer, certs: Path) -> None:
    response = _join(mtls, certs, "alice")
    assert response.client_id and response.session_secret
    # The certificate's name, not the one the client claims, names it.
    assert mtls.members() == ["alice"]
    with pytest.raises(grpc.RpcError) as err:
        _join(mtls, certs, "mallory")
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "'mallory' is not enrolled" in str(err.value.details())
    with pytest.raises(grpc.RpcError) as err:
        _join(mtls, certs, None)  # no client certificate: the handshake fails
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert mtls.members() == ["alice"]


def test_mutual_tls_needs_tls(certs: Path, tmp_path: Path) -> None:
    fed = FederationConfig(name="f", model="logreg", tensors=SPEC.tensors)
    with pytest.raises(ConfigError, match="mutual TLS"):
        ServerConfig(insecure=True, tls_client_ca=certs / "ca.pem", federations=(fed,))
