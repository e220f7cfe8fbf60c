"""Suite-wide isolation: no test writes to the user's caches or may reach a model hub."""
import os
import tempfile


def pytest_configure(config):
    # Subprocesses inherit these too.  Tests that need other values set them with monkeypatch.
    os.environ['GPUA_MMSEG_CACHE'] = tempfile.mkdtemp(prefix='gpua_mmseg_test_cache_')
    os.environ['HF_HUB_OFFLINE'] = '1'
    _refuse_remote_connections()


def _refuse_remote_connections():
    """In the test process, a connection to anything but this machine raises at once, so a
    test that would reach a hub or a download fails here instead of hanging in CI (configs say
    ``pretrained=True``; tests check that those names resolve to local files or fail fast).
    Loopback stays allowed: gloo / TCP stores of the distributed tests use it."""
    import ipaddress
    import socket

    def local(address):
        if not isinstance(address, tuple):      # AF_UNIX path
            return True
        host = address[0]
        if host in ('localhost', ''):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:                      # a host name: never resolved here
            return False

    orig = socket.socket.connect, socket.socket.connect_ex

    def guard(fn):
        def connect(self, address):
            if not local(address):
                raise OSError(f'tests may not reach the network (tried {address!r})')
            return fn(self, address)
        return connect

    socket.socket.connect, socket.socket.connect_ex = guard(orig[0]), guard(orig[1])


import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope='module')
def _fresh_text_cache():
    """Each test module starts as a new process would: no text embeddings of other modules in
    memory (the cache is keyed by weights, and seeded tiny models repeat across modules)."""
    from gpua_mmseg.models import text_classifier
    text_classifier._CACHE.clear()
    yield


@pytest.fixture(scope='module')
def tiny_sclip():
    """A random tiny open_clip CLIP under SCLIP's last block (``_helpers.tiny_clip_encoder``)."""
    from _helpers import tiny_clip_encoder
    return tiny_clip_encoder('sclip')


@pytest.fixture(scope='module')
def tiny_dino():
    """A random tiny timm DINOv3 ViT, patch 16 (``_helpers.tiny_dinov3_encoder``)."""
    from _helpers import tiny_dinov3_encoder
    return tiny_dinov3_encoder()
