"""Windowing and aggregation: pure functions."""
from __future__ import annotations

import numpy as np
import pytest

from voiceguard.windows import AggregationConfig, call_logit, flag_regions, length_offset, touching, window_starts


def test_shorter_than_one_window():
    assert window_starts(100, 400, 200).tolist() == [0]


def test_exact_multiple():
    assert window_starts(800, 400, 200).tolist() == [0, 200, 400]


def test_ragged_tail_gets_an_end_aligned_window():
    s = window_starts(900, 400, 200)
    assert s.tolist() == [0, 200, 400, 500]
    assert s[-1] + 400 == 900


def test_empty_signal():
    assert window_starts(0, 400, 200).size == 0


@pytest.mark.parametrize("hop", [0, -1, 401])
def test_bad_hop_rejected(hop):
    with pytest.raises(ValueError):
        window_starts(1000, 400, hop)


def test_call_logit_short_fake_inside_long_real_call():
    z = np.full(300, -4.0)  # 10 minutes of human speech at 2 s per window
    z[100:110] = 5.0  # 20 s of cloned voice
    assert call_logit(z, AggregationConfig(context=3)) == pytest.approx(5.0)
    # a single noisy window alone does not carry the call
    z2 = np.full(300, -4.0)
    z2[50] = 5.0
    assert call_logit(z2, AggregationConfig(context=3)) == pytest.approx(-1.0)


def test_call_logit_fewer_windows_than_context():
    assert call_logit(np.array([1.0, 3.0])) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        call_logit(np.array([]))


def test_flag_regions_hysteresis_and_min_duration():
    starts = np.arange(10) * 2.0
    ends = starts + 4.0
    p = np.array([0.1, 0.8, 0.65, 0.75, 0.2, 0.9, 0.1, 0.1, 0.8, 0.1])
    r = flag_regions(starts, ends, p, onset=0.7, offset=0.6)
    assert [(a, b) for a, b, _ in r] == [(2.0, 10.0), (10.0, 14.0), (16.0, 20.0)]
    assert r[0][2] == pytest.approx(0.8)
    assert flag_regions(starts, ends, p, onset=0.7, offset=0.6, min_duration=5.0) == [(2.0, 10.0, 0.8)]


def test_length_penalty_holds_long_real_calls_to_the_short_clip_false_alarm_rate():
    """Real speech scores ~ N(-1, 1): the plain maximum over a long call drifts up with its length; the
    length-corrected one stays where short clips are."""
    rng = np.random.default_rng(0)
    plain, corrected = AggregationConfig(context=1), AggregationConfig(context=1, length_penalty=1.0)
    short = np.mean([call_logit(rng.normal(-1, 1, 3), plain) for _ in range(2000)])
    long_plain = np.mean([call_logit(rng.normal(-1, 1, 150), plain) for _ in range(500)])
    long_corr = np.mean([call_logit(rng.normal(-1, 1, 150), corrected) for _ in range(500)])
    assert long_plain > short + 1.0
    assert abs(long_corr - short) < 0.35
    # nothing changes up to the reference number of runs, and a long fake stretch is still found
    assert length_offset(3, corrected) == 0.0 and length_offset(150, corrected) > 1.0
    z = np.r_[np.full(100, -2.0), np.full(10, 4.0), np.full(100, -2.0)]
    assert call_logit(z, AggregationConfig(context=3, length_penalty=1.0)) > 1.5


def test_aggregation_round_trips_through_a_checkpoint_config():
    from voiceguard.checkpoint import CheckpointConfig

    cfg = CheckpointConfig(aggregation=AggregationConfig(context=3, length_penalty=0.8))
    assert CheckpointConfig.from_dict(cfg.to_dict()).aggregation == cfg.aggregation
    old = cfg.to_dict()
    old["aggregation"] = {"context": 3}  # checkpoints written before the length penalty existed
    assert CheckpointConfig.from_dict(old).aggregation == AggregationConfig(context=3)


def test_touching_marks_windows_that_share_an_edge_or_overlap():
    starts = np.array([0, 4, 8, 12, 14])  # the last one is a tail window aligned to the end
    ends = starts + 4
    assert touching(starts, ends, []).tolist() == [False] * 5
    assert touching(starts, ends, [(8, 12)]).tolist() == [False, True, True, True, False]
    assert touching(starts, ends, [(0, 4), (14, 18)]).tolist() == [True, True, False, True, True]
