import pytest

from trimodal.packing.vocab import Vocab


@pytest.fixture
def vocab() -> Vocab:
    # 32 text ids, 16 image codes, 2 audio codebooks of 8: small but every range is present.
    return Vocab.from_sizes(32, 16, 8, 2)
