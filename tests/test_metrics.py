"""Metrics against values worked out by hand (scores: higher = synthetic; labels: 1 = synthetic)."""
from __future__ import annotations

import numpy as np
import pytest

from voiceguard import metrics

# Worked example A. human h = [0.1, 0.3, 0.5, 0.8], synthetic s = [0.4, 0.6, 0.7, 0.9].
# Sorted: .1h .3h .4s .5h .6s .7s .8h .9s. Flag when score >= t.
#   t     .1    .3    .4    .5    .6    .7    .8    .9    inf
#   far   1     3/4   2/4   2/4   1/4   1/4   1/4   0     0
#   miss  0     0     0     1/4   1/4   2/4   3/4   3/4   1
# far == miss == 1/4 at t = .6  -> EER 0.25 (threshold 0.6).
# DCF/norm = (1 * far * .95 + 10 * miss * .05) / min(.95, .5) = 1.9 far + miss:
#   1.9, 1.425, .95, 1.2, .725, .975, 1.225, .75, 1  -> minDCF 0.725 at t = .6.
# AUC: pairs s > h: .4 -> 2, .6 -> 3, .7 -> 3, .9 -> 4: 12 / 16 = 0.75.
# At threshold .5: false alarm = #(h >= .5)/4 = 2/4; miss = #(s < .5)/4 = 1/4.
H_A = [0.1, 0.3, 0.5, 0.8]
S_A = [0.4, 0.6, 0.7, 0.9]


def _xy(human, spoof):
    return np.array(human + spoof, dtype=float), np.array([0] * len(human) + [1] * len(spoof))


def test_example_a_by_hand():
    s, y = _xy(H_A, S_A)
    far, miss, thr = metrics.roc(s, y)
    np.testing.assert_allclose(far, [1, .75, .5, .5, .25, .25, .25, 0, 0])
    np.testing.assert_allclose(miss, [0, 0, 0, .25, .25, .5, .75, .75, 1])
    assert thr[-1] == np.inf and np.all(np.diff(thr) > 0)
    assert metrics.eer(s, y) == pytest.approx((0.25, 0.6))
    assert metrics.min_dcf(s, y) == pytest.approx((0.725, 0.6))
    assert metrics.roc_auc(s, y) == pytest.approx(0.75)
    assert metrics.rates_at_threshold(s, y, 0.5) == pytest.approx((0.5, 0.25))


def test_eer_interpolates_between_operating_points():
    # human [.2, .6], synthetic [.4, .8, .9]:
    #   t    .2   .4   .6   .8   .9   inf
    #   far  1    .5   .5   0    0    0
    #   miss 0    0    1/3  1/3  2/3  1
    # far - miss goes from 1/6 (t=.6) to -1/3 (t=.8): a = (1/6) / (1/2) = 1/3 of the way,
    # EER = .5 + 1/3 * (0 - .5) = 1/3 (= miss, constant 1/3 on that segment); nearer point t = .6.
    s, y = _xy([0.2, 0.6], [0.4, 0.8, 0.9])
    assert metrics.eer(s, y) == pytest.approx((1 / 3, 0.6))


def test_perfectly_separated():
    s, y = _xy([0.0, 0.1, 0.2], [0.7, 0.8])
    assert metrics.eer(s, y) == pytest.approx((0.0, 0.7))
    assert metrics.min_dcf(s, y) == pytest.approx((0.0, 0.7))
    assert metrics.roc_auc(s, y) == 1.0


def test_fully_inverted():
    # every human above every synthetic: the best a threshold can do is a trivial system
    s, y = _xy([0.7, 0.8], [0.0, 0.1, 0.2])
    assert metrics.eer(s, y)[0] == pytest.approx(1.0)
    assert metrics.roc_auc(s, y) == 0.0
    assert metrics.min_dcf(s, y)[0] == pytest.approx(1.0)  # flag nothing: 1.9 * 0 + 1


def test_all_tied():
    # one operating point besides "flag nothing": (far 1, miss 0) and (0, 1); the line between them
    # crosses far == miss at 0.5. AUC: every pair ties -> 1/2. minDCF: min(1.9, 1) = 1, flagging nothing.
    s, y = _xy([0.5, 0.5], [0.5, 0.5])
    assert metrics.eer(s, y) == pytest.approx((0.5, 0.5))
    assert metrics.roc_auc(s, y) == 0.5
    assert metrics.min_dcf(s, y) == (1.0, np.inf)


def test_partial_ties():
    # human [.2, .5], synthetic [.5, .9]: t .2/.5/.9/inf -> far 1/.5/0/0, miss 0/0/.5/1;
    # far - miss: .5 at t=.5, -.5 at t=.9 -> halfway: EER = .5 + .5 * (0 - .5) = .25.
    # AUC: .5 vs .2 -> 1, .5 vs .5 -> 1/2, .9 vs both -> 2: 3.5 / 4.
    s, y = _xy([0.2, 0.5], [0.5, 0.9])
    assert metrics.eer(s, y) == pytest.approx((0.25, 0.5))
    assert metrics.roc_auc(s, y) == pytest.approx(0.875)


def test_min_dcf_costs_map_to_asvspoof_roles():
    # c_miss (bona fide rejected) weighs our false alarms, c_fa (spoof accepted) our misses.
    # Example A with p_spoof .5, c_miss 1, c_fa 1: cost = .5 far + .5 miss, norm .5 -> far + miss;
    # minimum over the table: .5 at t = .4 (.5 + 0) and t = .6 (.25 + .25): first one wins -> t = .4.
    s, y = _xy(H_A, S_A)
    assert metrics.min_dcf(s, y, p_spoof=0.5, c_miss=1, c_fa=1) == pytest.approx((0.5, 0.4))
    # making false alarms expensive moves the best threshold up: (5 far + .5 miss) / .5 = 10 far + miss:
    # t=.9 gives .75, t=inf gives 1, t=.6 gives 2.75 -> .75 at t = .9
    assert metrics.min_dcf(s, y, p_spoof=0.5, c_miss=10, c_fa=1) == pytest.approx((0.75, 0.9))


def test_random_scores_agree_with_sklearn_and_brute_force():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + y, 1)  # rounded: many ties
    assert metrics.roc_auc(s, y) == pytest.approx(roc_auc_score(y, s))
    far, miss, _ = metrics.roc(s, y)
    e, _ = metrics.eer(s, y)
    i = np.argmin(np.abs(far - miss))  # the closest operating point brackets the crossing
    assert abs(e - (far[i] + miss[i]) / 2) <= abs(far[i] - miss[i]) / 2 + 1e-12
    brute = min(1.9 * np.mean(s[y == 0] >= t) + np.mean(s[y == 1] < t) for t in np.append(np.unique(s), np.inf))
    assert metrics.min_dcf(s, y)[0] == pytest.approx(brute)


def test_summary_and_one_class():
    s, y = _xy(H_A, S_A)
    d = metrics.summary(s, y, threshold=0.5)
    assert d["n"] == 8 and d["n_bonafide"] == 4 and d["n_spoof"] == 4
    assert d["eer"] == pytest.approx(0.25) and d["min_dcf"] == pytest.approx(0.725) and d["auc"] == 0.75
    assert (d["false_alarm"], d["miss"], d["n_false_alarm"], d["n_miss"]) == (0.5, 0.25, 2, 1)
    only_human = metrics.summary(H_A, [0] * 4, threshold=0.5)
    assert only_human["eer"] is None and only_human["false_alarm"] == 0.5 and only_human["miss"] is None
    with pytest.raises(ValueError, match="both classes"):
        metrics.eer(H_A, [0] * 4)


def test_by_group():
    # humans (group "bonafide") are H_A; A01 = [.4, .6], A02 = [.7, .9], each vs ALL humans.
    # A01: t .1/.3/.4/.5 -> far 1/.75/.5/.5, miss 0/0/0/.5 -> far == miss = .5 at t = .5 -> EER .5.
    # A02: far .25 for t in (.5, .8], miss 0 at t=.7 and .5 at t=.8 -> halfway: EER .25 (threshold .7).
    s = np.array(H_A + [0.4, 0.6, 0.7, 0.9])
    y = np.array([0] * 4 + [1] * 4)
    g = ["bonafide"] * 4 + ["A01", "A01", "A02", "A02"]
    out = metrics.by_group(s, y, g, threshold=0.5)
    assert list(out) == ["A01", "A02", "bonafide"]
    assert out["A01"]["eer"] == pytest.approx(0.5) and out["A01"]["vs"] == "all bonafide"
    assert out["A02"]["eer"] == pytest.approx(0.25) and out["A02"]["eer_threshold"] == pytest.approx(0.7)
    assert out["A01"]["miss"] == 0.5 and out["A02"]["miss"] == 0.0
    assert out["bonafide"]["eer"] is None and out["bonafide"]["false_alarm"] == 0.5
    assert out["bonafide"]["n"] == 4 and out["A01"]["n_spoof"] == 2
    mixed = metrics.by_group(s, y, ["x"] * 8)  # both classes in one group: scored on its own
    assert mixed["x"]["vs"] == "group" and mixed["x"]["eer"] == pytest.approx(0.25)


def _normal_scores(n: int, seed: int, shift: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """n human scores from N(0, 1), n synthetic from N(shift, 1): the true EER is Phi(-shift / 2)."""
    rng = np.random.default_rng(seed)
    return np.r_[rng.normal(0, 1, n), rng.normal(shift, 1, n)], np.r_[np.zeros(n), np.ones(n)].astype(int)


def test_eer_interval_covers_the_true_eer_about_as_often_as_it_says():
    """60 draws of 30 human and 30 synthetic scores from two normal distributions (true EER Phi(-0.75) =
    22.7 %): the 95 % interval holds the true EER in about 95 % of them (measured: 93 % of 100 draws)."""
    from scipy.stats import norm

    true = norm.cdf(-0.75)
    held = []
    for k in range(60):
        ci = metrics.eer_interval(*_normal_scores(30, k), n_resamples=300, seed=k)
        assert ci["low"] <= ci["eer"] <= ci["high"]
        held.append(ci["low"] <= true <= ci["high"])
    assert 0.83 <= np.mean(held) <= 1.0


def test_eer_interval_narrows_with_more_recordings_and_is_zero_when_separated():
    small = metrics.eer_interval(*_normal_scores(40, 0), n_resamples=500)
    large = metrics.eer_interval(*_normal_scores(640, 0), n_resamples=500)
    assert 2.5 < (small["high"] - small["low"]) / (large["high"] - large["low"]) < 6.5  # about sqrt(16) = 4
    s, y = _xy(H_A, [1.0, 1.1, 1.2])
    assert {k: metrics.eer_interval(s, y, n_resamples=200)[k] for k in ("eer", "low", "high")} == \
        {"eer": 0.0, "low": 0.0, "high": 0.0}
    one = metrics.eer_interval([0.1, 0.9, 0.5], [0, 1, 1], n_resamples=200)  # one human recording: no interval
    assert one["eer"] == 0.0 and one["low"] is None and one["high"] is None


def test_copies_of_a_clip_are_resampled_together():
    """Four identical copies of every clip carry no more evidence than the clips: resampled clip by clip
    (clusters), the interval is exactly that of the clips alone; resampled copy by copy it is too narrow."""
    s, y = _normal_scores(50, 3)
    alone = metrics.eer_interval(s, y, n_resamples=400, seed=7)
    s4, y4, clip = np.repeat(s, 4), np.repeat(y, 4), np.repeat(np.arange(s.size), 4)
    together = metrics.eer_interval(s4, y4, clip, n_resamples=400, seed=7)
    assert (together["low"], together["high"], together["eer"]) == (alone["low"], alone["high"], alone["eer"])
    assert together["n_units"] == [50, 50] and together["resampled"] == "cluster"
    apart = metrics.eer_interval(s4, y4, n_resamples=400, seed=7)
    assert (apart["high"] - apart["low"]) < 0.75 * (alone["high"] - alone["low"])


def test_eer_change_is_paired_and_says_better_worse_or_within_noise():
    s, y = _normal_scores(200, 1)
    same = metrics.eer_change(s, s, y, n_resamples=300)
    assert (same["change"], same["low"], same["high"], same["verdict"]) == (0.0, 0.0, 0.0, "within noise")
    rng = np.random.default_rng(2)
    better = s + np.where(y == 1, 1.0, 0.0) + rng.normal(0, 0.1, s.size)  # synthetic scores pushed up
    up = metrics.eer_change(s, better, y, n_resamples=300)
    assert up["verdict"] == "better" and up["low"] <= up["change"] <= up["high"] < 0
    assert up["before"] == pytest.approx(metrics.eer(s, y)[0])
    assert up["after"] == pytest.approx(metrics.eer(better, y)[0])
    down = metrics.eer_change(better, s, y, n_resamples=300)  # the same resamples: the interval mirrored
    assert down["verdict"] == "worse" and (down["low"], down["high"]) == pytest.approx((-up["high"], -up["low"]))
    # paired: a small shift that two separate intervals could not tell apart is seen when both models are
    # scored on the same resamples
    slightly = s + np.where(y == 1, 0.15, 0.0)
    small = metrics.eer_change(s, slightly, y, n_resamples=500)
    one, other = metrics.eer_interval(s, y, n_resamples=500), metrics.eer_interval(slightly, y, n_resamples=500)
    assert small["verdict"] == "better" and other["high"] > one["low"]  # the two intervals overlap
    assert metrics.eer_change(s, better, y, n_resamples=0)["verdict"] is None


@pytest.mark.parametrize("scores,labels,match", [
    ([0.1, np.nan], [0, 1], "finite"),
    ([0.1, 0.2], [0, 2], "labels must be"),
    ([0.1, 0.2, 0.3], [0, 1], "differ in length"),
])
def test_bad_input(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        metrics.roc(scores, labels)


def test_plots_write_png(tmp_path):
    s, y = _xy(H_A, S_A)
    curves = {"all": (s, y), "one class": (np.array(H_A), np.zeros(4, int))}
    for fn, name in ((metrics.plot_det, "det.png"), (metrics.plot_roc, "roc.png")):
        out = fn(curves, tmp_path / "sub" / name, threshold=0.5)
        assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
