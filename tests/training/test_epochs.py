"""The epoch helpers: the weight average follows its half-life and leaves the trained model alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from toolchain.progress import NullProgress
from toolchain.training.epochs import evaluate, weight_average
from toolchain.training.runtime import Runtime


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


class _Windows(torch.utils.data.Dataset):
    """Three files cut into 4, 1 and 3 windows; `file_index` names each window's file, as prepared sets do."""

    file_index = [0, 0, 0, 0, 1, 2, 2, 2]

    def __init__(self):
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(len(self.file_index), 3, 4, 4, generator=generator)
        self.targets = torch.tensor([1, 1, 1, 1, 0, 2, 2, 2])

    def __len__(self):
        return len(self.file_index)

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


def test_evaluate_loss_is_the_mean_over_windows_and_accuracy_is_per_file():
    dataset = _Windows()
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    criterion = nn.CrossEntropyLoss()
    loader = torch.utils.data.DataLoader(dataset, batch_size=3)
    result = evaluate(model, loader, criterion, Runtime(torch.device("cpu")), NullProgress())
    with torch.no_grad():
        expected = criterion(model(dataset.images), dataset.targets).item()
    # The loss is per window (not the windows' sum spread over three files), the accuracy per file.
    assert result.loss == pytest.approx(expected, rel=1e-5)
    assert result.probabilities.shape == (3, 3) and result.window_probabilities.shape == (8, 3)
    assert list(result.targets) == [1, 0, 2]
