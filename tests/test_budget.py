"""The time budget's planning (`tb_cnnviz.budget`), on a clock the tests drive."""

from __future__ import annotations

import pytest

from tb_cnnviz.budget import Drawing, ModelTiming, TimeBudget


class Clock:
    """Drives a `TimeBudget` through epochs: `train(s)` trains, `spend(s)` is the callback's."""

    def __init__(self, fraction=0.05, epochs=10, max_bytes=None, floor=0.0):
        self.now = 0.0
        # No floor unless a test asks: these runs are seconds long, the floor would hide the
        # fraction's mechanics (test_a_short_run_* pin the floor).
        self.budget = TimeBudget(fraction, max_bytes=max_bytes, floor=floor)
        self.budget.start_fit(epochs, now=self.now)

    def train(self, seconds):
        self.now += seconds
        self.budget.tick(now=self.now)
        self.budget.end_epoch()

    def run(self, epoch, drawings, final=False, cost=None):
        """Plans one epoch and 'draws' what it chose, each costing its estimate (or `cost`)."""
        plan = self.budget.plan(epoch, drawings, final=final)
        for d, steps in plan.draw:
            seconds = (cost or {}).get(d.tag, d.estimate)
            if d.steps and steps:
                seconds = seconds * steps / d.steps
            self.now += seconds
            self.budget.own_seconds += seconds
            self.budget.record(d, seconds, steps, d.estimate_bytes)
        return plan


def drawing(tag, seconds, *, cheap=False, kind="feature_maps", order=0, **kw):
    return Drawing(tag, kind, lambda *a: None, estimate=seconds, cheap=cheap, order=order, **kw)


def tags(plan):
    return [d.tag for d, _ in plan.draw]


def test_cheap_drawings_are_drawn_every_epoch_whatever_the_credit():
    """Cheap drawings (weights) are drawn at every epoch even with no credit left."""
    clock = Clock(fraction=0.01)
    weights = drawing("c/weights", 5.0, cheap=True, kind="weights")
    for epoch in range(3):
        clock.train(1.0)
        assert tags(clock.run(epoch, [weights])) == ["c/weights"]


def test_costly_drawings_take_turns_and_each_is_drawn():
    """Drawings costing more than one epoch's credit take turns: all are drawn, evenly."""
    clock = Clock(fraction=0.1, epochs=20)
    layers = [drawing(f"l{i}/feature_maps", 0.15, order=i) for i in range(3)]
    drawn = []
    for epoch in range(19):
        clock.train(1.0)  # 0.1 s of credit per epoch: one drawing every 1.5 epochs
        drawn.append(tags(clock.run(epoch, layers)))
    flat = [t for epoch in drawn for t in epoch]
    assert {t for t in flat} == {d.tag for d in layers}
    counts = [flat.count(d.tag) for d in layers]
    assert max(counts) - min(counts) <= 1  # fair turns
    assert clock.budget.own_seconds <= 0.1 * clock.budget.train_seconds + 0.15


def test_spending_stays_within_the_budget_over_a_run():
    """Over a run, own time stays within the budget (plus at most one drawing)."""
    clock = Clock(fraction=0.05, epochs=8)
    weights = drawing("c/weights", 0.01, cheap=True, kind="weights")
    costly = [drawing(f"l{i}/actmax", 0.3, kind="actmax", order=i) for i in range(4)]
    for epoch in range(8):
        clock.train(2.0)
        clock.run(epoch, [weights, *costly], final=epoch == 7)
    assert clock.budget.own_seconds <= 0.05 * clock.budget.train_seconds + 0.3


def test_a_drawing_too_costly_for_the_whole_run_is_left_out_with_its_cost():
    """A drawing costing more than the run's budget is left out; the reason says what to pass."""
    clock = Clock(fraction=0.05, epochs=5)
    clock.train(2.0)  # a 10 s run: 0.5 s budget
    plan = clock.run(0, [drawing("conv4/actmax", 3.0, kind="actmax")])
    assert tags(plan) == []
    reason = plan.left_out["conv4/actmax"]
    assert plan.skipped["conv4/actmax"] == reason
    assert "3.00 s" in reason and "0.50 s" in reason
    assert "budget=0.5" in reason and "budget=None" in reason


def test_the_last_epoch_gets_what_it_needs_to_draw_everything():
    """Earlier epochs keep back credit so the last epoch draws every drawing once."""
    clock = Clock(fraction=0.1, epochs=4)
    costly = [drawing(f"l{i}/actmax", 0.15, kind="actmax", order=i) for i in range(2)]
    plans = []
    for epoch in range(4):
        clock.train(1.0)
        plans.append(clock.run(epoch, costly, final=epoch == 3))
    assert sorted(tags(plans[-1])) == ["l0/actmax", "l1/actmax"]


def test_a_drawing_the_last_epoch_cannot_fit_is_reported_left_out_not_deferred():
    """At the last epoch a never-drawn drawing that does not fit is left out (no later turn)."""
    clock = Clock(fraction=0.1, epochs=2)
    first = drawing("a/actmax", 0.05, kind="actmax", order=0)
    second = drawing("b/actmax", 0.1, kind="actmax", order=1)
    clock.train(2.0)
    assert tags(clock.run(0, [first, second], cost={"a/actmax": 0.6})) == ["a/actmax"]
    clock.train(2.0)  # a cost 12x its estimate: the last epoch has no credit for b
    plan = clock.run(1, [first, second], final=True, cost={"a/actmax": 0.6})
    assert tags(plan) == []
    reason = plan.left_out["b/actmax"]
    assert reason.startswith("left out") and "budget=" in reason
    assert list(clock.budget.never_drawn(plan.left_out)) == ["b/actmax"]  # a was drawn


def test_reserved_seconds_are_kept_back_for_the_last_epochs_own_work():
    """`reserved` (the last epoch's snapshot) comes off what the run and its last epoch afford:
    a drawing that fits without it is left out with it."""
    plans = []
    for reserved in (0.0, 0.3):
        clock = Clock(fraction=0.1, epochs=2)
        clock.budget.reserved = reserved
        actmax = drawing("c/actmax", 0.3, kind="actmax")
        clock.train(2.0)
        clock.run(0, [actmax])
        clock.train(2.0)
        plans.append(clock.run(1, [actmax], final=True))
    assert [tags(p) for p in plans] == [["c/actmax"], []]
    assert plans[1].left_out["c/actmax"].startswith("left out")


def test_scalable_drawings_take_fewer_steps_when_credit_is_short():
    """A measured drawing with steps is drawn with fewer steps (not below min_steps) when short."""
    clock = Clock(fraction=0.1, epochs=100)
    actmax = drawing("c/actmax", 0.9, kind="actmax", steps=16, min_steps=4)
    clock.train(10.0)
    assert [s for _, s in clock.run(0, [actmax]).draw] == [16]  # 1.0 s of credit, 0.1 s left
    clock.train(2.5)  # 0.35 s of credit: about 6 of 16 steps
    [(_, steps)] = clock.run(1, [actmax]).draw
    assert 4 <= steps < 16
    clock.train(0.5)  # 0.05 s: not even min_steps fit
    assert clock.run(2, [actmax]).draw == []


def test_only_one_never_measured_drawing_starts_per_epoch_until_its_kind_is_calibrated():
    """Before a kind's first drawing, costs are estimates: one such drawing starts per epoch;
    once one of its kind was measured, its other layers may start together."""
    clock = Clock(fraction=0.5, epochs=10)
    costly = [drawing(f"l{i}/actmax", 0.01, kind="actmax", order=i) for i in range(3)]
    clock.train(10.0)
    plan = clock.run(0, costly)
    assert tags(plan) == ["l0/actmax"]
    assert "later" in plan.skipped["l1/actmax"]
    clock.train(10.0)
    assert tags(clock.run(1, costly)) == ["l1/actmax", "l2/actmax", "l0/actmax"]
    other = [drawing(f"l{i}/feature_maps", 0.01, order=i) for i in range(2)]
    clock.train(10.0)
    assert tags(clock.run(2, other)) == ["l0/feature_maps"]  # another kind: not calibrated


def test_measured_first_drawings_calibrate_their_kinds_other_estimates_downward_only():
    """A kind drawn in full for less than its estimate shrinks its other layers' estimates by
    that ratio (at most 4x); a kind that cost more keeps them; other kinds are untouched."""
    clock = Clock(fraction=1.0, epochs=10)
    actmax = [drawing(f"l{i}/actmax", 1.0, kind="actmax", order=i) for i in range(3)]
    maps = [drawing(f"l{i}/feature_maps", 0.1, order=i) for i in range(2)]
    clock.train(10.0)
    assert tags(clock.run(0, [actmax[0]], cost={"l0/actmax": 0.4})) == ["l0/actmax"]
    clock.train(10.0)
    assert tags(clock.run(1, [maps[0]], cost={"l0/feature_maps": 0.5})) == ["l0/feature_maps"]
    budget = clock.budget
    assert budget.estimate(actmax[1]) == pytest.approx(0.4)  # measured 0.4 of 1.0 estimated
    assert budget.estimate(maps[1]) == pytest.approx(0.1)  # cost 5x more: not raised
    assert budget.estimate(actmax[0]) == pytest.approx(0.4)  # its own measurement
    clock.train(10.0)
    assert tags(clock.run(2, [actmax[1]], cost={"l1/actmax": 0.01})) == ["l1/actmax"]
    assert budget.estimate(actmax[2]) == pytest.approx(0.4)  # the most cautious ratio counts
    fresh = Clock(fraction=1.0, epochs=10)
    fresh.train(10.0)
    assert tags(fresh.run(0, [actmax[0]], cost={"l0/actmax": 0.01})) == ["l0/actmax"]
    assert fresh.budget.estimate(actmax[1]) == pytest.approx(0.25)  # shrinks at most 4x


def test_a_timed_compiled_pass_replaces_the_eager_per_image_cost_in_estimates():
    """Once a compiled pass was observed, backward and compiled forward scale from it (the
    slowest observation kept), not from the eager pass's cost per image."""
    timing = ModelTiming(fixed=0.05, per_image=0.07)
    assert timing.backward(16) == pytest.approx(3.0 * 0.07 * 16)  # eager basis
    timing.observe_compiled(8, 0.12)
    timing.observe_compiled(8, 0.08)  # a faster pass does not make it optimistic
    assert timing.compiled_forward(8) == pytest.approx(0.12)
    assert timing.backward(16) == pytest.approx(ModelTiming.COMPILED_BACKWARD_FACTOR * 0.015 * 16)
    assert timing.forward(8) == pytest.approx(0.05 + 0.07 * 8)  # eager passes stay eager


def test_a_one_image_pass_splits_the_compiled_pass_into_a_fixed_part_and_one_per_image():
    """With a one-image pass timed too, a batch of 64 is estimated from what each image adds,
    not from the 8-image pass's average, which carries the call's fixed part 64 times; later
    passes count their time beyond the fixed part."""
    timing = ModelTiming(fixed=0.05, per_image=0.07)
    timing.observe_compiled(8, 0.0050, one=0.0015)
    assert timing.compiled_fixed == pytest.approx(0.001)
    assert timing.compiled_forward(64) == pytest.approx(0.001 + 0.0005 * 64)
    averaged = ModelTiming(fixed=0.05, per_image=0.07)
    averaged.observe_compiled(8, 0.0050)
    assert timing.backward(64) < 0.85 * averaged.backward(64)
    timing.observe_compiled(8, 0.0081)  # a slower pass later: (8.1 ms - 1 ms) / 8 per image
    assert timing.compiled_per_image == pytest.approx(0.0071 / 8)
    timing.observe_compiled(8, 0.0030, one=0.0040)  # a one-image pass slower than 8: ignored
    assert timing.compiled_fixed == pytest.approx(0.001)


def test_an_eager_backends_backward_estimate_is_never_zero():
    """On PyTorch (nothing compiles) a backward pass pays the fixed part: a per-image cost
    timed as 0 on a small model no longer makes activation maximization look free."""
    eager = ModelTiming(fixed=0.002, per_image=0.0, compiles=False)
    assert eager.backward(4) == pytest.approx(3.0 * 0.002)
    assert ModelTiming(fixed=0.002, per_image=0.001, compiles=False).backward(4) == pytest.approx(
        3.0 * (0.002 + 0.004)
    )


def test_calibration_measured_on_eager_estimates_does_not_shrink_compiled_ones():
    """A ratio measured against an eager-basis estimate does not apply once estimates come from
    a compiled pass (they would shrink twice)."""
    clock = Clock(fraction=1.0, epochs=10)
    clock.budget.timing = ModelTiming(0.01, 0.01)
    actmax = [drawing(f"l{i}/actmax", 1.0, kind="actmax", order=i) for i in range(2)]
    clock.train(10.0)
    clock.run(0, actmax[:1], cost={"l0/actmax": 0.5})
    assert clock.budget.estimate(actmax[1]) == pytest.approx(0.5)
    clock.budget.timing.observe_compiled(8, 0.01)
    assert clock.budget.estimate(actmax[1]) == pytest.approx(1.0)  # a new basis: uncalibrated


def test_the_byte_cap_defers_drawings_to_later_epochs():
    """Drawings beyond the per-epoch byte cap wait, with a reason naming the cap."""
    clock = Clock(fraction=1.0, epochs=10, max_bytes=1000)
    maps = [drawing(f"l{i}/feature_maps", 0.0, estimate_bytes=600, order=i) for i in range(2)]
    clock.train(1.0)
    clock.run(0, maps[:1])
    clock.run(0, maps[1:])  # both measured now
    clock.train(1.0)
    plan = clock.run(1, maps)
    assert len(plan.draw) == 1
    [reason] = plan.skipped.values()
    assert "cap" in reason


def test_no_budget_draws_everything_that_is_due():
    """budget=None: every drawing, full steps, nothing skipped."""
    clock = Clock(fraction=None)
    costly = [drawing(f"l{i}/actmax", 100.0, kind="actmax", steps=8) for i in range(3)]
    clock.train(0.1)
    plan = clock.run(0, costly)
    assert [(d.tag, s) for d, s in plan.draw] == [(d.tag, 8) for d in costly]
    assert plan.skipped == {} and plan.left_out == {}


def test_unknown_epoch_count_waits_for_credit_and_leaves_nothing_out():
    """In a custom loop (no epoch count), nothing is judged too costly; drawings wait for credit."""
    budget = TimeBudget(0.05)
    budget.start_fit(None, now=0.0)
    budget.tick(now=1.0)
    budget.end_epoch()
    plan = budget.plan(0, [drawing("c/actmax", 10.0, kind="actmax")])
    assert plan.left_out == {} and "c/actmax" in plan.skipped


def test_own_time_is_subtracted_from_training_time():
    """Training time is wall time since the fit started, less the callbacks' own time."""
    budget = TimeBudget(0.05, floor=0.0)
    budget.start_fit(3, now=100.0)
    budget.own_seconds += 2.0
    budget.tick(now=110.0)
    assert budget.train_seconds == pytest.approx(8.0)
    assert budget.credit() == pytest.approx(0.05 * 8.0 - 2.0)


@pytest.mark.timing
def test_model_timing_splits_fixed_and_per_image_cost():
    """ModelTiming.measure recovers a fixed and a per-image part from two timed calls."""
    import time

    # Marked timing: in CI's niced background run a 70 ms sleep once took 270 ms. Sleeps long
    # enough that an unniced run's few milliseconds of jitter stay small beside them.
    timing = ModelTiming.measure(lambda k: time.sleep(0.05 + 0.02 * k), 5)
    assert 0.03 < timing.fixed < 0.08
    assert 0.012 < timing.per_image < 0.03
    assert timing.trace() == pytest.approx(ModelTiming.TRACE_FACTOR * timing.fixed)


def test_what_the_run_cannot_afford_together_leaves_out_the_costliest():
    """Each fits the run alone but not both: the cheaper takes turns, the costlier is left out."""
    clock = Clock(fraction=0.1, epochs=5)
    cheap = drawing("c/feature_maps", 0.3, order=0)
    dear = drawing("c/actmax", 0.4, kind="actmax", order=0)
    clock.train(1.0)  # a 5 s run: 0.5 s of budget
    plan = clock.run(0, [dear, cheap])
    assert list(plan.left_out) == ["c/actmax"]
    assert "leaves 0.20 s" in plan.left_out["c/actmax"]
    for epoch in range(1, 5):
        clock.train(1.0)
        plan = clock.run(epoch, [dear, cheap], final=epoch == 4)
        assert "c/actmax" in plan.left_out
    assert clock.budget.measured(cheap)


def test_a_drawing_larger_than_the_byte_cap_is_drawn_alone():
    """A drawing bigger than the whole cap is not stuck waiting: it goes first, on its own."""
    clock = Clock(fraction=1.0, epochs=10, max_bytes=1000)
    big = drawing("big/feature_maps", 0.0, estimate_bytes=5000, order=0)
    small = drawing("small/feature_maps", 0.0, estimate_bytes=10, order=1)
    clock.train(1.0)
    assert tags(clock.run(0, [big, small])) == ["big/feature_maps"]
    clock.train(1.0)
    assert tags(clock.run(1, [big, small])) == ["small/feature_maps"]


def test_kinds_take_turns_for_what_the_run_affords():
    """Many cheap feature maps do not crowd out one Grad-CAM: kinds go round, cheapest first."""
    clock = Clock(fraction=0.1, epochs=5)
    maps = [drawing(f"l{i}/feature_maps", 0.05, order=i) for i in range(20)]
    cam = drawing("gradcam/attribution", 0.2, kind="attribution")
    clock.train(1.0)  # a 5 s run: 0.5 s of budget; 20 maps alone would take 1 s
    plan = clock.run(0, [*maps, cam])
    assert "gradcam/attribution" not in plan.left_out
    assert len([t for t in plan.left_out if t.endswith("/feature_maps")]) == 14


def test_a_short_run_gets_the_floor_and_draws_every_kind_once():
    """1 s of training: 5% is 0.05 s, but the 2 s floor draws every drawing, within it."""
    clock = Clock(fraction=0.05, epochs=10, floor=2.0)
    weights = drawing("c/weights", 0.01, cheap=True, kind="weights")
    costly = [
        drawing("c/feature_maps", 0.2, kind="feature_maps"),
        drawing("gradcam/attribution", 0.4, kind="attribution"),
        drawing("c/actmax", 0.6, kind="actmax"),
    ]
    drawn = set()
    for epoch in range(10):
        clock.train(0.1)
        plan = clock.run(epoch, [weights, *costly], final=epoch == 9)
        drawn |= set(tags(plan))
        assert not plan.left_out
    assert drawn == {"c/weights", *(d.tag for d in costly)}
    assert clock.budget.own_seconds <= 2.0 + 0.6


def test_a_long_run_is_not_affected_by_the_floor():
    """Where 5% of training is more than the floor, the floor adds nothing to the budget."""
    with_floor, without = Clock(fraction=0.05, epochs=5, floor=2.0), Clock(fraction=0.05, epochs=5)
    layers = [drawing(f"l{i}/feature_maps", 1.5, order=i) for i in range(6)]
    for epoch in range(5):
        for clock in (with_floor, without):
            clock.train(60.0)
            clock.run(epoch, layers, final=epoch == 4)
        assert with_floor.budget.allowance() == 0.0
        assert with_floor.budget.own_seconds == without.budget.own_seconds


def test_each_fit_gets_its_own_floor():
    """A second short fit() adds its own floor; the first fit's is kept in the credit."""
    clock = Clock(fraction=0.05, epochs=2, floor=2.0)
    clock.train(1.0)
    first = clock.budget.allowance()
    assert first == pytest.approx(2.0 - 0.05 * 2.0)  # projected: 2 epochs of 1 s
    clock.budget.start_fit(2, now=clock.now)
    assert clock.budget.allowance() == pytest.approx(2.0 - 0.05 * 1.0 + 2.0)


def test_the_floor_fades_out_between_five_and_ten_seconds_of_training():
    """Whole up to 5 s of training, half at 7.5 s, none from 10 s: longer runs keep 5%."""
    allowances = {}
    for seconds in (2.0, 5.0, 7.5, 10.0, 12.5):
        clock = Clock(fraction=0.05, epochs=1, floor=2.0)
        clock.train(seconds)
        allowances[seconds] = clock.budget.allowance()
    assert allowances[2.0] == pytest.approx(2.0 - 0.1)
    assert allowances[5.0] == pytest.approx(2.0 - 0.25)
    assert allowances[7.5] == pytest.approx(1.0 - 0.375)
    assert allowances[10.0] == allowances[12.5] == 0.0


def test_a_first_drawings_one_time_part_is_not_expected_of_the_next():
    """A first drawing of 2.7 s, 2.3 s of it tracing and setup: the next is expected to cost
    0.4 s (not 2.7), and the next measured cost replaces that guess outright."""
    budget = TimeBudget(0.05)
    gradcam = drawing("gradcam/attribution", 1.0, kind="attribution")
    budget.record(gradcam, 2.7, one_time=2.3)
    assert budget.estimate(gradcam) == pytest.approx(0.4)
    assert budget.largest_drawing() == pytest.approx(2.7)  # what the budget may run over by
    budget.record(gradcam, 0.5)
    assert budget.estimate(gradcam) == pytest.approx(0.5)
    budget.record(gradcam, 0.3)
    assert budget.estimate(gradcam) == pytest.approx(0.3 * 0.3 + 0.7 * 0.5)  # then an average


def test_a_costly_first_drawing_waiting_its_turn_does_not_hold_back_cheap_first_drawings():
    """Never-drawn drawings go cheapest first: a Grad-CAM estimated at 0.66 s that the credit
    cannot pay yet does not keep four 0.01 s feature maps waiting behind it."""
    clock = Clock(fraction=0.05, epochs=10)
    gradcam = drawing("gradcam/attribution", 0.66, kind="attribution")
    maps = [drawing(f"l{i}/feature_maps", 0.01, order=i) for i in range(4)]
    clock.train(4.0)  # 0.2 s of credit
    first = clock.run(0, [gradcam, *maps])
    assert tags(first) == ["l0/feature_maps"]  # one never-drawn kind starts per epoch
    assert "later" in first.skipped["gradcam/attribution"]
    clock.train(4.0)
    later = clock.run(1, [gradcam, *maps])
    assert tags(later) == ["l1/feature_maps", "l2/feature_maps", "l3/feature_maps"]
    assert later.skipped["gradcam/attribution"].startswith("deferred by the time budget")


def test_drawings_sharing_one_pass_start_together():
    """Feature maps of several layers come from one pass: never drawn, they all start at the
    epoch the first one does, while other never-drawn kinds still start one per epoch."""
    clock = Clock(fraction=0.5, epochs=10)
    maps = [drawing(f"l{i}/feature_maps", 0.01, order=i, shares_pass=True) for i in range(3)]
    actmax = [drawing(f"l{i}/actmax", 0.01, kind="actmax", order=i) for i in range(2)]
    clock.train(10.0)
    plan = clock.run(0, [*maps, *actmax])
    assert tags(plan) == ["l0/feature_maps", "l1/feature_maps", "l2/feature_maps"]
    assert "later" in plan.skipped["l0/actmax"]


def test_the_pass_a_steps_feature_maps_share_is_counted_once_per_step_not_per_layer():
    """Three layers' maps (5 ms each) from one 0.1 s pass cost 0.115 s at a step, not 0.3 s;
    a measured pass replaces its estimate, and a plan made again at the epoch whose pass ran
    does not charge it again (the last epoch's second plan)."""

    def maps(pass_estimate):
        return [
            drawing(
                f"l{i}/feature_maps", 0.005, order=i, shares_pass=True, pass_estimate=pass_estimate
            )
            for i in range(3)
        ]

    clock = Clock(fraction=0.012, epochs=1)  # 0.12 s of credit at the last epoch
    clock.train(10.0)
    plan = clock.budget.plan(0, maps(0.1), final=True)
    assert tags(plan) == ["l0/feature_maps", "l1/feature_maps", "l2/feature_maps"]
    # Without room for the pass and one layer's maps (0.105 s), none is drawn; with it, one.
    clock = Clock(fraction=0.01, epochs=1)
    clock.train(10.0)
    assert len(tags(clock.budget.plan(0, maps(0.1), final=True))) == 0
    clock = Clock(fraction=0.0108, epochs=1)
    clock.train(10.0)
    assert len(tags(clock.budget.plan(0, maps(0.1), final=True))) == 1
    # Measured at 0.02 s, the pass leaves room for every layer in 0.04 s.
    clock = Clock(fraction=0.004, epochs=1)
    clock.train(10.0)
    clock.budget.record_pass("feature_maps", 0.02)
    assert clock.budget.pass_seconds("feature_maps") == pytest.approx(0.02)
    assert len(tags(clock.budget.plan(0, maps(0.1), final=True))) == 3
    # The pass ran at this epoch: planned again, 5 ms of credit draws a layer without it.
    clock = Clock(fraction=0.0005, epochs=1)
    clock.train(10.0)
    clock.budget.plan(0, [], final=True)
    clock.budget.record_pass("feature_maps", 0.1)
    assert len(tags(clock.budget.plan(0, maps(0.1), final=True))) == 1
    # Other kinds share nothing: their estimate is all they cost.
    assert clock.budget.pass_cost(drawing("g/attribution", 0.1, kind="attribution")) == 0.0


def test_a_first_drawings_quick_tracing_does_not_shrink_a_deeper_layers_tracing():
    """A first layer whose tracing took a third of its estimate leaves a deeper layer's
    tracing estimate whole: tracing does not scale from layer to layer (MobileNetV2's
    block_5_project, shrunk so, traced in 1.4 s for 0.3 s and ran the budget to 144%)."""

    def actmax(tag, estimate, once, order):
        return drawing(
            tag, estimate, kind="actmax", steps=16, min_steps=4, order=order, estimate_once=once
        )

    clock = Clock(fraction=1.0, epochs=10)
    first, deep = actmax("c1/actmax", 0.7, 0.6, 0), actmax("c4/actmax", 2.0, 1.0, 1)
    clock.train(10.0)
    clock.budget.own_seconds += 0.3
    clock.budget.record(first, 0.3, 16, 1, one_time=0.2)  # tracing 0.2 s of 0.6 s estimated
    assert clock.budget.estimate(deep) == pytest.approx(1.0 + 1.0)  # steps: 0.1 / 0.1 = 1


def test_a_timed_forward_trace_replaces_the_eager_guess_of_tracing_costs():
    """Once a forward trace of the model was timed, trace() scales from it (the slowest kept),
    not from the eager pass's fixed part; PyTorch still traces nothing."""
    timing = ModelTiming(fixed=0.15, per_image=0.05)
    assert timing.trace() == pytest.approx(ModelTiming.TRACE_FACTOR * 0.15)
    timing.observe_trace(0.9)
    timing.observe_trace(0.5)
    timing.observe_trace(float("nan"))
    assert timing.trace() == pytest.approx(ModelTiming.BACKWARD_TRACE_FACTOR * 0.9)
    eager = ModelTiming(fixed=0.15, per_image=0.05, compiles=False)
    eager.observe_trace(0.9)
    assert eager.trace() == 0.0


def test_time_inside_an_open_own_block_is_already_spent_when_planning_again():
    """The last epoch's second plan (after its first drawings) sees what they took: no overdraw."""
    import time

    budget = TimeBudget(0.5, floor=0.0)
    budget.start_fit(1)
    time.sleep(0.4)  # training earns 0.2 s
    budget.tick()
    budget.end_epoch()
    layers = [drawing(f"l{i}/feature_maps", 0.15, order=i) for i in range(2)]
    with budget.own():
        assert tags(budget.plan(0, layers[:1], final=True)) == ["l0/feature_maps"]
        time.sleep(0.15)  # drawing it took its estimate, not yet added to own_seconds
        assert budget.credit() < 0.1
        assert tags(budget.plan(0, layers[1:], final=True)) == []


def test_a_first_scalable_drawing_short_of_credit_pays_its_tracing_whole_and_fewer_steps():
    """Tracing 0.5 s + 32 steps of 0.5 s in all, on 0.7 s of credit: drawn with 12 steps."""

    def actmax(**kw):
        return drawing("c/actmax", 1.0, kind="actmax", steps=32, min_steps=8, **kw)

    clock = Clock(fraction=0.1, epochs=1)
    clock.train(7.0)
    plan = clock.budget.plan(0, [actmax(estimate_once=0.5)], final=True)
    assert [(d.tag, steps) for d, steps in plan.draw] == [("c/actmax", 12)]
    assert clock.budget.estimate(plan.draw[0][0], 8) == pytest.approx(0.625)
    # Without the split, the whole estimate is tracing for all the budget knows: left out.
    clock = Clock(fraction=0.1, epochs=1)
    clock.train(7.0)
    plan = clock.budget.plan(0, [actmax()], final=True)
    assert plan.draw == [] and "c/actmax" in plan.left_out


def test_the_setup_is_amortized_over_the_epochs_and_the_total_still_holds():
    """0.5 s of setup on a 1 s run budget: the first epoch draws all 4 layers, the run stays in."""
    clock = Clock(fraction=0.05, epochs=5)
    clock.now += 0.5  # checks, tracing and timing before the first epoch
    clock.budget.own_seconds += 0.5
    layers = [drawing(f"l{i}/feature_maps", 0.02, order=i, shares_pass=True) for i in range(4)]
    drawn = []
    for epoch in range(5):
        clock.train(4.0)
        drawn.append(len(clock.run(epoch, layers, final=epoch == 4).draw))
    assert drawn[0] == 4 and sum(drawn) >= 12
    assert clock.budget.own_seconds <= 0.05 * clock.budget.train_seconds + 0.02


def test_a_first_drawing_affordable_only_at_its_fewest_steps_holds_nothing_back():
    """Before the last epoch it is drawn where credit pays for it; nothing waits for it."""
    clock = Clock(fraction=0.05, epochs=5)
    maps = [drawing(f"l{i}/feature_maps", 0.02, order=i, shares_pass=True) for i in range(2)]
    actmax = drawing("l0/actmax", 1.0, kind="actmax", steps=32, min_steps=8, estimate_once=0.5)
    steps = []
    for epoch in range(4):  # 0.2 s earned per epoch, 1.0 s over the run: 0.625 s fits, 1 s not
        clock.train(4.0)
        plan = clock.run(epoch, [*maps, actmax])
        chosen = dict((d.tag, s) for d, s in plan.draw)
        if "l0/actmax" in chosen:
            steps.append(chosen["l0/actmax"])
        else:  # the feature maps never wait for it
            assert {"l0/feature_maps", "l1/feature_maps"} <= set(chosen), epoch
            assert not any("waiting for l0/actmax" in r for r in plan.skipped.values())
    # Drawn once, with fewer steps, when an epoch's credit paid its tracing and 8 steps or more.
    assert len(steps) == 1 and 8 <= steps[0] < 32


def test_a_first_drawings_steps_calibrate_the_next_first_drawings_steps_apart():
    """A first layer's activation maximization, mostly tracing, measures its steps at a fifth
    of their estimate: a deeper layer's steps shrink by that (at most 4x), its tracing stays
    whole; one ratio of the whole would have left the deeper layer at 2x its cost."""

    def actmax(tag, estimate, order):
        return drawing(
            tag, estimate, kind="actmax", steps=16, min_steps=4, order=order, estimate_once=0.3
        )

    clock = Clock(fraction=1.0, epochs=10)
    first, deep = actmax("c1/actmax", 1.3, 0), actmax("c4/actmax", 3.3, 1)
    clock.train(10.0)
    # Drawn at 4 steps: 0.3 s tracing (as estimated) + 0.05 s of steps (0.25 s estimated).
    clock.budget.own_seconds += 0.35
    clock.budget.record(first, 0.35, 4, 1, one_time=0.3)
    assert clock.budget.estimate(deep) == pytest.approx(0.3 + 3.0 * 0.25)
    assert clock.budget.estimate(deep, 4) == pytest.approx(0.3 + 0.75 * 0.25)
    # Without the one-time part measured, the steps are calibrated by the whole's ratio; the
    # tracing is never made smaller (`test_a_first_drawings_quick_tracing_*`).
    clock = Clock(fraction=1.0, epochs=10)
    clock.train(10.0)
    clock.budget.record(first, 0.35, 4, 1)
    assert clock.budget.estimate(deep) == pytest.approx(0.3 + 3.0 * 0.35 / 0.55)


def test_at_the_last_epoch_each_kind_never_drawn_starts_before_a_kinds_second_drawing():
    """With credit for 0.5 s at the last epoch, one Grad-CAM (0.3 s) is drawn before the
    eleventh feature map (0.02 s each): never-drawn drawings go round the kinds there."""
    clock = Clock(fraction=0.05, epochs=1)
    gradcam = drawing("gradcam/attribution", 0.3, kind="attribution")
    maps = [drawing(f"l{i}/feature_maps", 0.02, order=i, shares_pass=True) for i in range(30)]
    clock.train(20.0)  # the run affords all of them (1 s), but 0.5 s was spent already
    clock.budget.own_seconds += 0.5
    plan = clock.run(0, [gradcam, *maps], final=True)
    assert "gradcam/attribution" in tags(plan)
    assert len(tags(plan)) == 1 + 9  # 0.3 s + 9 x 0.02 s, the first map before it
    assert plan.skipped["l29/feature_maps"].startswith("left out")


def test_a_drawing_that_waiting_cannot_bring_before_the_last_epoch_holds_nothing_back():
    """Once the last epoch's keep-back binds, credit an epoch earns is kept for the last epoch:
    a drawing that does not fit now never will before it, so the feature maps do not wait for
    it; the last epoch draws it."""
    clock = Clock(fraction=0.05, epochs=5)
    maps = [drawing(f"l{i}/feature_maps", 0.01, order=i, shares_pass=True) for i in range(4)]
    actmax = drawing("l0/actmax", 0.6, kind="actmax")
    drawn = []
    for epoch in range(5):  # 0.2 s earned per epoch, 1.0 s over the run
        clock.train(4.0)
        plan = clock.run(epoch, [*maps, actmax], final=epoch == 4)
        assert not any("waiting for l0/actmax" in r for r in plan.skipped.values()), epoch
        drawn.append(tags(plan))
    assert all({d.tag for d in maps} <= set(epoch) for epoch in drawn)  # every layer, every epoch
    assert "l0/actmax" in drawn[-1]
    assert clock.budget.own_seconds <= 0.05 * clock.budget.train_seconds + 1e-9


def test_at_the_last_epoch_a_scalable_drawing_takes_the_steps_that_leave_the_rest_their_turn():
    """0.9 s of credit at the last epoch: activation maximization (tracing 0.5 s, 32 steps of
    0.5 s in all) takes 12 steps, not 16, so the feature maps after it are drawn too."""
    clock = Clock(fraction=0.1, epochs=1)
    clock.train(9.0)
    maps = [drawing(f"l{i}/feature_maps", 0.05, order=i) for i in range(2)]
    gradcam = drawing("gradcam/attribution", 0.1, kind="attribution")
    actmax = drawing(
        "l0/actmax", 1.0, kind="actmax", steps=32, min_steps=8, estimate_once=0.5, order=2
    )
    plan = clock.budget.plan(0, [*maps, gradcam, actmax], final=True)
    chosen = dict((d.tag, s) for d, s in plan.draw)
    assert set(chosen) == {"l0/feature_maps", "l1/feature_maps", "gradcam/attribution", "l0/actmax"}
    assert chosen["l0/actmax"] == 12
    # Maps drawn before, after it in turn, that share a 0.1 s pass: it leaves room for the
    # pass too (12 steps; 19 without it, and no map fits after them).
    clock = Clock(fraction=0.1, epochs=2)
    shared = [
        drawing(f"l{i}/feature_maps", 0.05, order=i, shares_pass=True, pass_estimate=0.1)
        for i in range(2)
    ]
    clock.train(4.5)
    clock.budget.plan(0, [])
    for d in shared:
        clock.budget.record(d, 0.05)
    clock.budget.record_pass("feature_maps", 0.1)
    clock.train(4.5)  # 0.9 s of credit
    plan = clock.budget.plan(1, [*shared, actmax], final=True)
    chosen = dict((d.tag, s) for d, s in plan.draw)
    assert set(chosen) == {"l0/feature_maps", "l1/feature_maps", "l0/actmax"}
    assert chosen["l0/actmax"] == 12


def test_a_drawing_that_waiting_brings_before_the_last_epoch_holds_the_cheaper_ones_back():
    """Early in a long run the keep-back leaves room: a 0.3 s first drawing that 0.1 s of credit
    cannot pay holds the feature maps back until it is drawn, well before the last epoch."""
    clock = Clock(fraction=0.05, epochs=20)
    maps = [drawing(f"l{i}/feature_maps", 0.02, order=i, shares_pass=True) for i in range(2)]
    gradcam = drawing("gradcam/attribution", 0.3, kind="attribution")
    clock.train(2.0)
    clock.run(0, maps)  # the maps are measured; Grad-CAM comes in at the next epoch
    drawn_at = None
    for epoch in range(1, 19):
        clock.train(2.0)  # 0.1 s earned per epoch
        plan = clock.run(epoch, [*maps, gradcam])
        if "gradcam/attribution" in tags(plan):
            drawn_at = epoch
            break
        assert tags(plan) == [] and "waiting for gradcam" in plan.skipped["l0/feature_maps"]
    assert drawn_at is not None and drawn_at <= 4


def test_the_last_epochs_keep_back_counts_a_first_scalable_drawing_at_its_fewest_steps():
    """A first activation maximization the run affords whole (0.8 s) is kept back for the last
    epoch at its fewest steps (0.35 s), not whole: with 0.3 s of credit at the fourth epoch of
    five, the feature maps are drawn (kept back whole, nothing was: the demo CNN at 4,000)."""
    clock = Clock(fraction=0.05, epochs=5)
    maps = [drawing(f"l{i}/feature_maps", 0.02, order=i, shares_pass=True) for i in range(2)]
    actmax = drawing("l0/actmax", 0.8, kind="actmax", steps=32, min_steps=8, estimate_once=0.2)
    for _ in range(4):
        clock.train(4.0)  # 0.2 s earned per epoch, 1.0 s over the run
    clock.budget.own_seconds = 0.5  # earlier epochs' drawings: 0.3 s of credit now
    plan = clock.budget.plan(3, [*maps, actmax])
    assert tags(plan) == ["l0/feature_maps", "l1/feature_maps"]
    # The last epoch draws it at the steps its credit leaves, beside the maps.
    clock.run(3, [*maps, actmax])
    clock.train(4.0)
    last = clock.budget.plan(4, [*maps, actmax], final=True)
    chosen = dict((d.tag, s) for d, s in last.draw)
    assert chosen.get("l0/actmax", 0) >= 8 and len(chosen) == 3, chosen


def test_a_priority_drawing_comes_first_at_every_epoch_it_fits_and_holds_nothing_back():
    """Grad-CAM (priority) is drawn first at every epoch where anything costly is, beside the
    first feature maps of epoch 0 (its first drawing does not spread them over epochs), and
    where it does not fit, the feature maps after it are drawn anyway."""
    clock = Clock(fraction=0.05, epochs=4)
    gradcam = drawing("gradcam/attribution", 0.1, kind="attribution", priority=True)
    maps = [drawing(f"l{i}/feature_maps", 0.05, order=i) for i in range(20)]
    drawn = []
    for epoch in range(4):
        clock.train(10.0)  # 0.5 s of credit an epoch
        plan = clock.run(epoch, [*maps, gradcam], final=epoch == 3)
        drawn.append(tags(plan))
    assert all(epoch[0] == "gradcam/attribution" for epoch in drawn if epoch), drawn
    assert sum(1 for epoch in drawn if epoch) >= 3, drawn  # the last epoch's keep-back may bind
    assert "l0/feature_maps" in drawn[0]
    assert clock.budget.own_seconds <= 0.05 * clock.budget.train_seconds + 0.1
    # Without priority the same Grad-CAM waits for the never-drawn layers: not at epoch 0.
    plain = Clock(fraction=0.05, epochs=4)
    plain.train(10.0)
    waiting = drawing("gradcam/attribution", 0.1, kind="attribution")
    assert "gradcam/attribution" not in tags(plain.run(0, [*maps, waiting]))
    # A Grad-CAM the credit cannot pay yet holds back none of the feature maps after it.
    short = Clock(fraction=0.05, epochs=10)
    short.train(4.0)  # 0.2 s of credit
    costly = drawing("gradcam/attribution", 0.6, kind="attribution", priority=True)
    plan = short.run(0, [*maps[:2], costly])
    assert tags(plan) == ["l0/feature_maps"]
    assert not plan.skipped["l1/feature_maps"].startswith("deferred by the time budget: waiting")


def test_a_priority_drawing_just_short_of_its_epochs_credit_borrows_one_epoch_ahead():
    """Grad-CAM whose first estimate (0.45 s) is over what an epoch leaves (0.4 s), behind
    feature maps that spend each epoch's credit, is drawn from the second epoch on with credit
    from the epochs to come (without: only at the last); one costing more than two epochs'
    credit still waits; the first epoch (its time holds the compiling) does not borrow; and
    the run stays within its budget."""

    def run(gradcam_estimate, spent):
        clock = Clock(fraction=0.05, epochs=5)
        gradcam = drawing(
            "gradcam/attribution", gradcam_estimate, kind="attribution", priority=True
        )
        weights = drawing("c/weights", 0.1, cheap=True, kind="weights")
        maps = [drawing(f"l{i}/feature_maps", 0.066, order=i, shares_pass=True) for i in range(6)]
        drawn = []
        for epoch in range(5):
            clock.train(10.0)  # 0.5 s of credit an epoch, 0.4 s after the weights
            plan = clock.run(
                epoch, [weights, *maps, gradcam], final=epoch == 4, cost={gradcam.tag: spent}
            )
            drawn.append("gradcam/attribution" in tags(plan))
        assert clock.budget.own_seconds <= 0.05 * clock.budget.train_seconds + 1e-9
        return drawn

    assert run(0.45, 0.15) == [False, True, True, True, True]  # [False] * 4 + [True] before
    assert run(1.0, 0.15)[:4] == [False, False, False, False]
    # The last epoch has no epochs to come to borrow from.
    clock = Clock(fraction=0.05, epochs=1)
    clock.train(10.0)
    gradcam = drawing("gradcam/attribution", 0.55, kind="attribution", priority=True)
    assert tags(clock.run(0, [gradcam], final=True)) == []


def test_a_priority_drawing_leaves_the_byte_caps_exception_to_the_first_of_the_others():
    """The first costly drawing of an epoch may pass the byte cap: Grad-CAM drawn first (as a
    priority drawing) does not take that from an activation maximization larger than the cap."""
    clock = Clock(fraction=0.5, epochs=2, max_bytes=1000)
    gradcam = drawing("gradcam/attribution", 0.01, kind="attribution", priority=True)
    gradcam.estimate_bytes = 100
    big = drawing("l0/actmax", 0.01, kind="actmax", estimate_bytes=5000)
    clock.train(10.0)
    assert tags(clock.run(0, [big, gradcam])) == ["gradcam/attribution", "l0/actmax"]


def test_the_first_batchs_compiling_is_left_out_of_the_projected_training():
    """A first epoch whose first batch took 10 s (compiling) and the others 1 s projects the
    epochs to come at 4 s, not 13 s; an epoch of two batches cannot tell, and projects as
    before; later epochs' batches and a new fit start over."""
    budget = TimeBudget(0.05, floor=0.0)
    budget.start_fit(3, now=0.0)
    for batch, at in enumerate([0.0, 10.0, 11.0, 12.0]):
        budget.batch_begins(batch, now=at)
    budget.tick(now=13.0)
    budget.end_epoch()
    assert budget.projected_train_seconds() == pytest.approx(21.0)  # 13 + 2 x 4
    for batch, at in enumerate([13.0, 13.1, 13.2, 13.3]):  # the next epoch's: not counted
        budget.batch_begins(batch, now=at)
    budget.tick(now=17.0)
    budget.end_epoch()
    assert budget.projected_train_seconds() == pytest.approx(21.0)  # 9 + 4 a warm epoch x 3
    budget.start_fit(3, now=100.0)
    for batch, at in enumerate([100.0, 110.0]):
        budget.batch_begins(batch, now=at)
    budget.tick(now=111.0)
    budget.end_epoch()
    assert budget.projected_train_seconds() == pytest.approx(17.0 + 3 * 11.0)


def test_a_tutorials_last_epoch_keeps_what_it_needs_beside_the_weights_of_the_epochs_before():
    """On 25 short epochs under the floor, what the last epoch needs to draw every kind is kept
    back beside the filter weights the epochs before it draw whatever the credit: without, they
    spent it and the last epoch went without an activation maximization."""
    clock = Clock(fraction=0.05, epochs=25, floor=1.6)
    weights = drawing("c/weights", 0.007, cheap=True, kind="weights")
    costly = [
        drawing("c1/feature_maps", 0.006, shares_pass=True),
        drawing("c2/feature_maps", 0.006, shares_pass=True, order=1),
        drawing("gradcam/attribution", 0.09, kind="attribution", priority=True),
        drawing("c1/actmax", 0.1, kind="actmax", order=2),
        drawing("c2/actmax", 0.15, kind="actmax", order=3),
    ]
    for epoch in range(25):
        clock.train(0.05)
        plan = clock.run(epoch, [weights, *costly], final=epoch == 24)
    assert set(tags(plan)) == {"c/weights", *(d.tag for d in costly)}
    assert clock.budget.own_seconds <= 1.6 + 1e-9
