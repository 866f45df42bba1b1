"""The package against a secured cluster (`dtc local --secure`: TLS and role tokens on
every connection): with the secrets directory a client and a worker work; without it the
client is turned away."""

from __future__ import annotations

import os
import threading
from typing import Iterator

import pytest

import dtc
from conftest import LIMIT, Proc, dtc_bin


@pytest.fixture(scope="module")
def secure() -> Iterator[tuple[str, str, str]]:
    proc = Proc([dtc_bin(), "local", "--secure", "-p", "0", "--http", "off", "--shards", "1", "--workers", "0"])
    try:
        router = proc.line("router:").split()[-1]
        shard = proc.line("shard 0 replicas:").split()[-1]
        secrets = proc.line("secure:").split()[-1]
        yield router, shard, secrets
    finally:
        proc.stop()


def test_a_client_and_a_worker_with_the_secrets_are_served(secure: tuple[str, str, str]) -> None:
    router, shard, secrets = secure
    worker = dtc.Worker(shard, secrets=secrets)

    @worker.task("secret_upper")
    def secret_upper(task: dtc.Task) -> str:
        return task.text.upper()

    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        client = dtc.Client(router, secrets=secrets)
        assert client.run("secret_upper", "over tls", timeout=LIMIT).text == "OVER TLS"
    finally:
        worker.stop()
        thread.join(LIMIT)


def test_a_client_without_the_secrets_is_turned_away(secure: tuple[str, str, str]) -> None:
    router, _, _ = secure
    with pytest.raises(dtc.DtcError):
        dtc.Client(router, retry_for=0).run("noop", timeout=LIMIT)


def test_a_missing_secrets_directory_is_a_clear_error(secure: tuple[str, str, str], tmp_dir: object) -> None:
    router, _, _ = secure
    with pytest.raises(ValueError, match="cannot load the secrets"):
        dtc.Client(router, secrets="/nonexistent/dtc-secrets")


def test_a_worker_and_a_client_with_only_the_ca_and_their_token_file_are_served(
    secure: tuple[str, str, str],
) -> None:
    # What a worker's and a client's machine hold: ca.pem and worker.toml or client.toml.
    router, shard, secrets = secure
    ca = os.path.join(secrets, "ca.pem")
    worker = dtc.Worker(shard, ca_file=ca, token_file=os.path.join(secrets, "worker.toml"))

    @worker.task("secret_lower")
    def secret_lower(task: dtc.Task) -> str:
        return task.text.lower()

    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        client = dtc.Client(router, ca_file=ca, token_file=os.path.join(secrets, "client.toml"))
        assert client.run("secret_lower", "OVER TLS", timeout=LIMIT).text == "over tls"
        # The client's token is not a worker's: a worker holding it is refused.
        with pytest.raises(dtc.DtcError):
            wrong = os.path.join(secrets, "worker.toml")
            dtc.Client(router, ca_file=ca, token_file=wrong, retry_for=0).run("secret_lower", "x", timeout=LIMIT)
    finally:
        worker.stop()
        thread.join(LIMIT)
