"""Suite-wide isolation: no test writes to the user's caches or may reach a model hub."""
import os
import tempfile


def pytest_configure(config):
    # Subprocesses inherit these too.  Tests that need other values set them with monkeypatch.
    os.environ['GPUA_MMSEG_CACHE'] = tempfile.mkdtemp(prefix='gpua_mmseg_test_cache_')
    os.environ['HF_HUB_OFFLINE'] = '1'


import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope='module')
def _fresh_text_cache():
    """Each test module starts as a new process would: no text embeddings of other modules in
    memory (the cache is keyed by weights, and seeded tiny models repeat across modules)."""
    from gpua_mmseg.models import text_classifier
    text_classifier._CACHE.clear()
    yield
