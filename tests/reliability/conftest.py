"""Shared fixtures of the reliability suite."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """In-process runs must do the same float math as the 1-thread children they are compared
    with (kill/resume and torchrun tests)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
