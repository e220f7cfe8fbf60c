"""The suite's network guard (tests/conftest.py): a connection off this machine fails at once
with a clear message, so configs that name hub weights (``pretrained=True``) can be tested
without any chance of a download; loopback (gloo, TCP stores) still works."""
import socket

import pytest


def test_remote_connection_is_refused():
    with pytest.raises(OSError, match='tests may not reach the network'):
        socket.create_connection(('203.0.113.7', 443), timeout=1)   # TEST-NET-3, never routed


def test_loopback_still_connects():
    srv = socket.socket()
    srv.bind(('127.0.0.1', 0))
    srv.listen(1)
    try:
        cli = socket.create_connection(srv.getsockname(), timeout=2)
        cli.close()
    finally:
        srv.close()
