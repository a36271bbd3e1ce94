import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own empty results cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("EXPLODING_GRADIENTS_CACHE", str(folder))
    return folder
