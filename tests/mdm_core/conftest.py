import pytest
import torch

from trimodal.packing.vocab import Vocab


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core box: intra-op threads only add spin-wait contention
    (measured: a 6 ms backward became 475 ms under load with 2 threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def vocab() -> Vocab:
    # 32 text ids, 16 image codes, 2 audio codebooks of 8: small but every range is present.
    return Vocab.from_sizes(32, 16, 8, 2)
