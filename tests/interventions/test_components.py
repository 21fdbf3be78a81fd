"""Replacement values: mean, zero and resampled corrupted activations."""

import pytest
import torch

from core import interventions as iv
from core.errors import UserError
from tests.interventions.batches import equal_length_batch


def test_resample_and_mean_values(handle):
    corrupt = handle.capture(equal_length_batch(handle, n=5, seed=3))
    mean = iv.replacement("mean", corrupt, 4)
    assert mean.heads.shape[1] == 1 and torch.allclose(mean.heads[1, 0], corrupt.heads[1].mean(0))
    resampled = iv.replacement("resample", corrupt, 4, seed=7)
    assert resampled.heads.shape[1] == 4
    for row in range(4):  # every row is one of the corrupted prompts
        assert any(torch.equal(resampled.mlps[:, row], corrupt.mlps[:, j]) for j in range(5))
    assert torch.equal(iv.replacement("resample", corrupt, 4, seed=7).heads, resampled.heads)
    with pytest.raises(UserError, match="unknown ablation"):
        iv.replacement("median", corrupt, 4)
