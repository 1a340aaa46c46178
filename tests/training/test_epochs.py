"""The epoch helpers: the weight average follows its half-life and leaves the trained model alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from toolchain.training.epochs import weight_average


def test_weight_average_halves_a_steps_weight_in_its_half_life():
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = weight_average(model, half_life_epochs=2, steps_per_epoch=5)
    ema.update_parameters(model)  # The first update copies the weights.
    with torch.no_grad():
        model.weight.fill_(0.0)
    for _ in range(10):  # Two epochs of five steps at weight 0: the old weights keep half their share.
        ema.update_parameters(model)
    assert torch.allclose(ema.module.weight, torch.full_like(model.weight, 0.5), atol=1e-6)
    assert torch.count_nonzero(model.weight) == 0  # The trained model is not touched.


@pytest.mark.parametrize("half_life", [0, 0.0])
def test_no_half_life_means_no_average(half_life):
    assert weight_average(nn.Linear(3, 2), half_life, 10) is None
