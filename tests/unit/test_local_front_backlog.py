"""The local front holds a burst of parallel clients (issue 16 item 7: with the default listen
backlog of 5 it reset connections under a 50-request burst).

The kernel completes a connection into the listen backlog before the server accepts it, so the
burst is made while the front is not accepting yet: every connection must still be established,
and once the front serves, every one answered."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from local.http_front import FrontServer, FrontState
from local.model import StackModel

CLIENTS = 200


@pytest.fixture
def front() -> Iterator[FrontServer]:
    server = FrontServer(0, FrontState(model=StackModel(parameters={})), lambda _: None)
    yield server
    server.stop()


def test_200_parallel_clients_are_all_connected_and_answered(front: FrontServer) -> None:
    port = front.server_address[1]
    clients: list[socket.socket] = []
    try:
        for _ in range(CLIENTS):  # the accept loop is not running: only the backlog holds these
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=3))
        front.start()
        for client in clients:
            client.sendall(b"GET /_local/health HTTP/1.1\r\nHost: local\r\nConnection: close\r\n\r\n")
        status_lines = [client.makefile("rb").readline() for client in clients]
    finally:
        for client in clients:
            client.close()

    assert len(clients) == CLIENTS
    assert {line.split(b" ")[1] for line in status_lines} == {b"503"}  # not ready: nothing created
