"""The one feedback rule: predicted channels from the model, input-only ones from the truth, padding restored."""

from __future__ import annotations

import torch

from nestor_ds.data.feedback import INPUT_ONLY, PADDED, PREDICTED, Feedback, channel_roles


def test_roles_of_a_set_with_an_input_only_channel() -> None:
    assert channel_roles(3, 2, 4).tolist() == [PREDICTED, PREDICTED, INPUT_ONLY, PADDED]
    assert channel_roles(1, None, 4).tolist() == [PREDICTED, PADDED, PADDED, PADDED]


def test_next_window_takes_each_channel_from_its_source() -> None:
    window = torch.rand(2, 8, 8, 3, 4)
    pred = torch.rand(2, 8, 8, 1, 4) + 10
    truth = torch.rand(2, 8, 8, 1, 4) - 10
    roles = torch.stack([channel_roles(3, 2, 4), channel_roles(1, None, 4)])  # per sample
    nxt = Feedback(roles, pad_value=1.5).next_window(window, pred, truth)
    assert nxt.shape == window.shape
    torch.testing.assert_close(nxt[:, :, :, :2], window[:, :, :, 1:])  # the window slid on by one frame
    new = nxt[:, :, :, -1]
    torch.testing.assert_close(new[0, ..., :2], pred[0, :, :, 0, :2])
    torch.testing.assert_close(new[0, ..., 2], truth[0, :, :, 0, 2])
    assert (new[0, ..., 3] == 1.5).all() and (new[1, ..., 1:] == 1.5).all()
    torch.testing.assert_close(new[1, ..., 0], pred[1, :, :, 0, 0])
    # no truth (a user's fields end): input-only channels hold the window's last frame
    held = Feedback(roles, pad_value=1.5).next_window(window, pred, None)
    torch.testing.assert_close(held[0, :, :, -1, 2], window[0, :, :, -1, 2])
