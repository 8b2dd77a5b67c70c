"""The ETA of a night (issue 21, item 2): launcher/eta.py's pure rules over scenario numbers."""

from __future__ import annotations

from datetime import datetime

import pytest

from launcher import eta, fmt, ladder as ladder_mod, plan
from launcher.choice import MEASURED, THRESHOLD, Verdict

from conftest import ROOT, all_available
from test_choice import trial


def test_training_time_is_epochs_times_images_at_the_measured_speed():
    assert eta.training_s(30.0, 100, 3912) == pytest.approx(100 * 3912 / 30)
    assert eta.training_s(30.0, 1, 3912) == pytest.approx(130.4)
    for speed, epochs, images in ((None, 100, 3912), (0.0, 100, 3912), (-1.0, 100, 3912), (30.0, None, 3912),
                                  (30.0, 100, None), (30.0, 100, 0)):
        assert eta.training_s(speed, epochs, images) is None


def test_epochs_left_count_the_rest_of_the_epoch_in_progress():
    assert eta.epochs_left(100, 5, 150, 600) == pytest.approx(95.75)  # epoch 5 is a quarter done
    assert eta.epochs_left(100, 100, 600, 600) == 0  # the last batch of the last epoch
    assert eta.epochs_left(100, 5, None, 600) == 96  # batch unknown: all of epoch 5 left
    assert eta.epochs_left(100, None, None, None, done=4) == 96  # before the first batch: epochs done say
    assert eta.epochs_left(100, None, None, None) is None and eta.epochs_left(None, 5, 1, 10) is None


def test_this_runs_epochs_come_first_then_its_pace_then_the_trial():
    rows = {4: {"time": 999.0}, 5: {"time": 400.0}, 6: {"time": 800.0}}  # epoch 4: an earlier attempt's clock
    run = eta.run_epoch_s(rows, saved=2, last=6)
    assert run == 400.0  # results.csv's `time` runs from this attempt's training start, over its 2 epochs
    both = eta.rest(10, run_epoch=run, pace_epoch=120.0, trial_epoch=100.0)
    assert (both.seconds, both.source, both.with_val) == (4000.0, eta.EPOCHS, True)
    pace = eta.rest(10, run_epoch=None, pace_epoch=120.0, trial_epoch=100.0)
    assert (pace.seconds, pace.source, pace.with_val) == (1200.0, eta.PACE, False)
    told = eta.rest(10, trial_epoch=100.0)
    assert (told.seconds, told.source) == (1000.0, eta.TRIAL) and told.words() == "from the trial (training only)"
    assert eta.rest(10) is None and eta.rest(None, trial_epoch=100.0) is None
    assert eta.run_epoch_s(rows, saved=0, last=6) is None and eta.run_epoch_s({}, saved=2, last=6) is None
    assert eta.pace_epoch_s(600, 5.0) == 120.0 and eta.pace_epoch_s(600, None) is None


def test_the_start_rungs_eta_needs_its_trial_to_have_measured_it():
    ladder = all_available(ladder_mod.load(ROOT / "ladders" / "default.toml"))
    start = ladder.rungs[0]
    p = plan.Plan("0", (), start, ladder.rungs, None, (), (), verdicts=(
        Verdict(start.name, MEASURED, True, "fits", trial(start.name, 8, 9, ips=30.0)),
        Verdict(ladder.rungs[1].name, MEASURED, False, "oom", trial(ladder.rungs[1].name, 20, 30, ips=50.0))))
    e = eta.at_start(p, 3912)
    assert e.seconds == pytest.approx(start.epochs * 3912 / 30) and e.epoch_s == pytest.approx(3912 / 30)
    assert (e.source, e.epochs) == (eta.TRIAL, start.epochs)
    assert eta.speeds(p) == {start.name: 30.0, ladder.rungs[1].name: 50.0}  # status falls back on any rung's
    threshold = plan.Plan("0", (), start, ladder.rungs, None, (), (), verdicts=(
        Verdict(start.name, THRESHOLD, True, "≥ 15 GiB"),))
    assert eta.at_start(threshold, 3912) is None and eta.speeds(threshold) == {}
    assert eta.at_start(p, None) is None  # no dataset count, no ETA
    no_speed = plan.Plan("0", (), start, ladder.rungs, None, (), (), verdicts=(
        Verdict(start.name, MEASURED, True, "fits", trial(start.name, 8, 9, ips=None)),))
    assert eta.at_start(no_speed, 3912) is None


def test_the_real_night_against_the_expected_is_a_signed_share():
    assert eta.versus(27600, 29100) == "+5 %" and eta.versus(10000, 8800) == "-12 %" and eta.versus(0, 5) == "-"



def test_a_clock_time_has_its_date_only_on_another_day():
    t = datetime(2026, 5, 3, 4, 12).timestamp()
    assert fmt.clock(t, t - 3600) == "04:12" and fmt.clock(t, t - 86400) == "2026-05-03 04:12"
