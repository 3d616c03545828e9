"""Shared test setup."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny shapes run fastest on one thread: two OpenMP threads per pytest-xdist worker on a
    busy 2-core CI box spin against each other (seen: the VAE tests ~20x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
