import math

import numpy as np
import pytest
import torch

from avemo_edge import smoothing as S


def test_tcs_loss_hand_computed():
    p = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])  # steps: jump, then still
    # ||p2 - p1||^2 = 1 + 1 = 2, ||p3 - p2||^2 = 0 -> (2 + 0) / (3 - 1) = 1
    assert S.tcs_loss(p).item() == pytest.approx(1.0)
    q = torch.tensor([[[0.5, 0.5], [0.7, 0.3]]])  # 0.04 + 0.04 = 0.08 over one pair
    assert S.tcs_loss(q).item() == pytest.approx(0.08)
    assert S.tcs_loss(torch.full((2, 4, 7), 1 / 7)).item() == 0.0


def test_tcs_loss_with_padding_mask():
    p = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]], [[0.5, 0.5], [0.7, 0.3], [0.7, 0.3]]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    # clip 1: one valid pair -> 2; clip 2: (0.08 + 0) / 2 = 0.04; mean over clips = 1.02
    assert S.tcs_loss(p, mask).item() == pytest.approx(1.02)
    assert S.tcs_loss(p[:, :1], mask[:, :1]).item() == 0.0  # single-step clips contribute nothing


def test_filter_hand_computed():
    f = S.TCSFilter(0.8)
    assert np.allclose(f(np.array([1.0, 0.0])), [1.0, 0.0])  # starts from the first prediction
    assert np.allclose(f(np.array([0.0, 1.0])), [0.8, 0.2])  # 0.8 * 1 + 0.2 * 0
    assert np.allclose(f(np.array([0.0, 1.0])), [0.64, 0.36])


def test_filter_keeps_time_constant_for_other_step_lengths():
    a = 0.8
    # Two 50 ms steps must equal one 100 ms step toward the same target.
    f = S.TCSFilter(a)
    f(np.array([1.0, 0.0]), t=0.0)
    f(np.array([0.0, 1.0]), t=0.05)
    half = f(np.array([0.0, 1.0]), t=0.10)
    assert np.allclose(half, [0.8, 0.2])
    g = S.TCSFilter(a)
    g(np.array([1.0, 0.0]), t=0.0)
    assert np.allclose(g(np.array([0.0, 1.0]), t=0.3), [a**3, 1 - a**3])
    assert S.step_coefficient(0.1) == pytest.approx(0.8)
    assert -0.1 / math.log(0.8) == pytest.approx(0.448, abs=1e-3)


def test_stability_metrics():
    labels = [0, 0, 1, 1, 0, 0, 0, 0, 0, 0]  # 2 flips in 1 s -> 120 per minute
    assert S.label_flips(labels) == 2
    assert S.flips_per_minute(labels) == pytest.approx(120.0)
    probs = np.array([[1.0, 0.0], [0.5, 0.5], [0.5, 0.5]])  # TV 0.5 then 0 -> mean 0.25
    assert S.probability_jitter(probs) == pytest.approx(0.25)
    pred = [2, 2, 2, 2, 2, 5, 5]
    assert S.switch_latency(pred, change_step=3, new_label=5) == pytest.approx(0.2)
    assert S.switch_latency(pred, change_step=3, new_label=4) == math.inf


def test_filter_reduces_flips_on_a_noisy_stream():
    rng = np.random.default_rng(0)
    base = np.array([0.45, 0.40, 0.15])
    raw = np.clip(base + rng.normal(0, 0.08, (600, 3)), 1e-3, None)
    raw /= raw.sum(1, keepdims=True)
    smoothed = S.smooth_sequence(raw)
    assert S.flips_per_minute(smoothed.argmax(1)) < S.flips_per_minute(raw.argmax(1)) / 2
    assert S.probability_jitter(smoothed) < S.probability_jitter(raw) / 2


def test_label_hold_needs_a_lead_of_margin():
    assert S.hold_label(np.array([0.3, 0.7]), None, 0.2) == 1  # nothing shown yet: the argmax
    assert S.hold_label(np.array([0.45, 0.55]), 0, 0.2) == 0  # leads by 0.10 < 0.2: keep 0
    assert S.hold_label(np.array([0.35, 0.65]), 0, 0.2) == 1  # leads by 0.30: switch
    assert S.hold_label(np.array([0.45, 0.55]), 0, 0.0) == 1  # margin 0 is the argmax
    f = S.TCSFilter(0.0, 0.2)
    f(np.array([0.9, 0.1]))
    f(np.array([0.45, 0.55]))
    assert f.shown == 0
    f.reset()
    assert f.shown is None
    with pytest.raises(ValueError, match="hold margin"):
        S.TCSFilter(0.8, 1.5)


def test_shown_sequence_hold_cuts_flips_on_a_close_race():
    rng = np.random.default_rng(1)
    raw = np.clip(np.array([0.42, 0.40, 0.18]) + rng.normal(0, 0.05, (600, 3)), 1e-3, None)
    raw /= raw.sum(1, keepdims=True)
    q, plain = S.shown_sequence(raw, 0.8, 0.0)
    q2, held = S.shown_sequence(raw, 0.8, 0.1)
    assert np.array_equal(plain, q.argmax(1)) and np.allclose(q, q2)
    assert S.label_flips(held) < S.label_flips(plain) / 3
    assert S.shown_sequence(np.zeros((0, 3)))[1].size == 0
