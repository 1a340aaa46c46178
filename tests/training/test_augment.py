"""Augmentation of training batches: what each transform does to an image and its target, and that it repeats
under a seed and does nothing when off."""

from __future__ import annotations

import pytest
import torch

from toolchain.errors import TrainingError
from toolchain.training.augment import NONE, Augmentation, augment_batch, strength


def images(b: int = 4, mels: int = 16, frames: int = 40) -> torch.Tensor:
    torch.manual_seed(1)
    return 0.2 + 0.8 * torch.rand(b, 3, mels, frames)  # Minimum ~0.2, so masked/shifted-in cells are visible.


def test_off_changes_nothing_and_targets_are_one_hot():
    x = images()
    out, soft = augment_batch(x, torch.tensor([0, 1, 2, 1]), 3, NONE)
    assert out is x and soft.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]]


def test_masks_set_bands_to_the_image_minimum_and_stay_within_their_width():
    x = images(b=8)
    floor = x.amin(dim=(1, 2, 3))
    out, _ = augment_batch(x, torch.zeros(8, dtype=torch.long), 2,
                           Augmentation(time_shift=0, time_masks=1, time_mask=0.25, freq_masks=0, mixup_alpha=0))
    for i in range(8):
        masked_frames = (out[i, 0] == floor[i]).all(dim=0)  # Whole columns at the minimum.
        assert int(masked_frames.sum()) <= 10  # At most a quarter of 40 frames.
        assert torch.equal(out[i][:, :, ~masked_frames], x[i][:, :, ~masked_frames])  # The rest untouched.
    assert any(bool((out[i, 0] == floor[i]).all(dim=0).any()) for i in range(8))
    out, _ = augment_batch(x, torch.zeros(8, dtype=torch.long), 2,
                           Augmentation(time_shift=0, time_masks=0, freq_masks=2, freq_mask=0.25, mixup_alpha=0))
    rows = [(out[i, 0] == floor[i]).all(dim=1) for i in range(8)]  # Whole mel rows at the minimum.
    assert all(int(r.sum()) <= 8 for r in rows) and any(bool(r.any()) for r in rows)


def test_time_shift_moves_the_image_and_fills_the_gap_with_its_minimum():
    x = torch.full((6, 3, 4, 20), 0.1)
    x[:, :, :, 0] = 1.0  # A loud first frame, as trimmed clips have.
    out, _ = augment_batch(x, torch.zeros(6, dtype=torch.long), 2,
                           Augmentation(time_shift=0.5, time_masks=0, freq_masks=0, mixup_alpha=0))
    loud = [int((out[i, 0, 0] == 1.0).nonzero().flatten()[0]) if (out[i, 0, 0] == 1.0).any() else None
            for i in range(6)]
    assert any(p not in (0, None) for p in loud)  # Some clip's sound no longer starts at frame 0...
    assert all(float(out[i].min()) >= 0.1 for i in range(6))  # ...and nothing below the clip's own floor came in.


def test_mixup_mixes_two_clips_and_their_labels_the_clip_itself_weighing_most():
    x, targets = images(b=16), torch.arange(16) % 4
    torch.manual_seed(3)
    out, soft = augment_batch(x, targets, 4, Augmentation(time_shift=0, time_masks=0, freq_masks=0,
                                                          mixup_alpha=0.4))
    assert torch.allclose(soft.sum(dim=1), torch.ones(16))
    own = soft[torch.arange(16), targets]
    assert bool((own >= 0.5 - 1e-6).all()) and bool((own < 1).any())
    assert out.shape == x.shape and not torch.equal(out, x)


def test_a_seeded_draw_repeats():
    aug, x, targets = Augmentation(), images(), torch.tensor([0, 1, 0, 1])
    torch.manual_seed(7)
    first = augment_batch(x, targets, 2, aug)
    torch.manual_seed(7)
    second = augment_batch(x, targets, 2, aug)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@pytest.mark.parametrize("field,value", [("time_shift", 1.0), ("time_masks", -1), ("freq_mask", 1.5),
                                         ("mixup_alpha", -0.2)])
def test_bad_settings_are_named(field, value):
    with pytest.raises(TrainingError, match=field):
        Augmentation(**{field: value})


def test_a_short_call_is_never_shifted_or_masked_out_of_its_window():
    """A trimmed 0.4-s call at the start of a 5-s window (5 of 54 frames here): shifted only to the right, masked
    only in part. Moving it left, or masking a band as wide as a tenth of the window, could leave a silent image
    labelled as the call."""
    x = torch.full((64, 3, 8, 54), 0.05)
    x[:, :, :, :5] = 0.5 + torch.rand(64, 3, 8, 5) / 2
    out, _ = augment_batch(x, torch.zeros(64, dtype=torch.long), 2,
                           Augmentation(time_shift=0.25, time_masks=2, time_mask=0.1, freq_masks=0, mixup_alpha=0))
    for i in range(64):
        loud = (out[i] > 0.05).any(dim=1).any(dim=0).nonzero().flatten()
        assert loud.numel() == 5, i  # A tenth of 5 frames is no frame: the whole call stays.
        assert int(loud[0]) >= 0 and int(loud[-1]) <= 4 + 13  # Right by at most a quarter of 54 frames.
    starts = [int((out[i] > 0.05).any(dim=1).any(dim=0).nonzero()[0]) for i in range(64)]
    assert len(set(starts)) > 5  # The call does move to many positions.
    wide = torch.full((16, 3, 8, 54), 0.05)
    wide[:, :, :, 10:50] = 0.5 + torch.rand(16, 3, 8, 40) / 2  # A 40-frame sound: masks up to 4 frames each.
    out, _ = augment_batch(wide, torch.zeros(16, dtype=torch.long), 2,
                           Augmentation(time_shift=0, time_masks=2, time_mask=0.1, freq_masks=0, mixup_alpha=0))
    for i in range(16):
        silent = ~(out[i] > 0.05).any(dim=1).any(dim=0)
        assert bool(silent[:10].all()) and bool(silent[50:].all())  # Untouched outside the sound...
        assert 0 <= int(silent[10:50].sum()) <= 8  # ...and at most two bands of 4 frames inside it.
    assert any(bool((~(out[i] > 0.05).any(dim=1).any(dim=0))[10:50].any()) for i in range(16))


def test_augmentation_starts_at_its_epoch_and_ramps_to_full():
    assert [strength(e, 4, 3) for e in range(1, 9)] == pytest.approx([0, 0, 0, 1 / 3, 2 / 3, 1, 1, 1])
    assert [strength(e, 1, 0) for e in range(1, 4)] == [1.0, 1.0, 1.0]
    assert [strength(e, 2, 0) for e in range(1, 4)] == [0.0, 1.0, 1.0]
