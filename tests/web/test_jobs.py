"""The lanes: one job at a time per lane, positions, a bounded queue, and cancellation that
frees the worker at once."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from convscope.errors import UserInputError
from convscope.events import Progress
from convscope.web.jobs import Job, JobContext, Lanes, QueueFull


def _png(_: Any) -> bytes:
    return b"png"


def _wait(job: Job, timeout: float = 10.0) -> None:
    done = threading.Event()
    job.add_done_callback(lambda _: done.set())
    assert done.wait(timeout), f"job {job.kind} did not finish ({job.state})"


def _blocker(release: threading.Event, started: threading.Event | None = None) -> Any:
    """A job that reports progress until `release` is set (or it is cancelled)."""

    def run(ctx: JobContext) -> dict[str, Any]:
        if started is not None:
            started.set()
        n = 0
        while not release.is_set():
            n += 1
            ctx.on_progress(Progress("block", n, None, "ticks"))
            time.sleep(0.005)
        return {"ticks": n}

    return run


@pytest.fixture
def lanes() -> Any:
    lanes = Lanes(limit=3, encode_preview=_png)
    yield lanes
    lanes.close()


def test_a_job_runs_and_keeps_its_events_and_result(lanes: Lanes) -> None:
    def run(ctx: JobContext) -> dict[str, Any]:
        for i in range(3):
            ctx.on_progress(Progress("count", i + 1, 3, "steps", metrics={"loss": 1.0 / (i + 1)}))
        return {"answer": 42}

    job = Job("count", "m", {}, run)
    assert lanes.submit(job) == 0
    _wait(job)
    assert job.state == "done" and job.result == {"answer": 42}
    assert [e["done"] for e in job.events] == [1, 2, 3]
    assert job.events[-1]["metrics"] == {"loss": pytest.approx(1 / 3)}
    assert lanes.get(job.id) is job and lanes.position(job) is None


def test_jobs_of_one_lane_run_one_at_a_time_in_order_with_their_positions(lanes: Lanes) -> None:
    release, started = threading.Event(), threading.Event()
    first = Job("first", "m", {}, _blocker(release, started))
    lanes.submit(first)
    assert started.wait(5)
    order: list[str] = []
    second = Job("second", "m", {}, lambda ctx: order.append("second") or {})
    third = Job("third", "m", {}, lambda ctx: order.append("third") or {})
    assert lanes.submit(second) == 1
    assert lanes.submit(third) == 2
    assert (lanes.position(first), lanes.position(second), lanes.position(third)) == (0, 1, 2)
    assert second.state == "queued"
    release.set()
    _wait(third)
    assert order == ["second", "third"]


def test_other_lanes_do_not_wait(lanes: Lanes) -> None:
    release = threading.Event()
    lanes.submit(Job("slow", "a", {}, _blocker(release)))
    quick = Job("quick", "b", {}, lambda ctx: {"ok": True})
    lanes.submit(quick)
    _wait(quick, timeout=5)
    release.set()


def test_a_full_queue_refuses_with_a_retry_after(lanes: Lanes) -> None:
    release, started = threading.Event(), threading.Event()
    lanes.submit(Job("running", "m", {}, _blocker(release, started)))
    assert started.wait(5)
    for i in range(3):  # the limit: three waiting
        lanes.submit(Job(f"q{i}", "m", {}, lambda ctx: {}))
    with pytest.raises(QueueFull) as info:
        lanes.submit(Job("one too many", "m", {}, lambda ctx: {}))
    assert info.value.retry_after >= 1
    release.set()


def test_cancelling_a_queued_job_takes_it_out_of_the_queue(lanes: Lanes) -> None:
    release, started = threading.Event(), threading.Event()
    first = Job("first", "m", {}, _blocker(release, started))
    lanes.submit(first)
    assert started.wait(5)
    ran = threading.Event()
    queued = Job("queued", "m", {}, lambda ctx: ran.set() or {})
    after = Job("after", "m", {}, lambda ctx: {})
    lanes.submit(queued)
    lanes.submit(after)
    lanes.cancel(queued)
    assert queued.state == "cancelled"
    assert lanes.position(after) == 1  # moved up
    release.set()
    _wait(after)
    assert not ran.is_set()


def test_cancelling_a_running_job_frees_the_lane_at_its_next_event(lanes: Lanes) -> None:
    never, started = threading.Event(), threading.Event()
    running = Job("forever", "m", {}, _blocker(never, started))
    nxt = Job("next", "m", {}, lambda ctx: {"ran": True})
    lanes.submit(running)
    assert started.wait(5)
    lanes.submit(nxt)
    lanes.cancel(running)
    _wait(nxt, timeout=5)  # it would wait forever if the cancelled job kept the lane
    assert running.state == "cancelled" and nxt.state == "done"


def test_a_failed_job_says_why_and_the_lane_goes_on(lanes: Lanes) -> None:
    def bad(ctx: JobContext) -> dict[str, Any]:
        raise UserInputError("layer 'x' is unknown.")

    def broken(ctx: JobContext) -> dict[str, Any]:
        raise RuntimeError("boom")

    a, b, c = Job("a", "m", {}, bad), Job("b", "m", {}, broken), Job("c", "m", {}, lambda ctx: {})
    for job in (a, b, c):
        lanes.submit(job)
    _wait(c)
    assert a.state == "failed" and a.error == "layer 'x' is unknown."
    assert b.state == "failed" and b.error is not None and "RuntimeError: boom" in b.error
    assert c.state == "done"


def test_previews_are_kept_as_the_newest_png(lanes: Lanes) -> None:
    def run(ctx: JobContext) -> dict[str, Any]:
        ctx.set_preview(object())
        ctx.set_preview(object())
        return {}

    job = Job("p", "m", {}, run)
    lanes.submit(job)
    _wait(job)
    assert job.preview == b"png" and job.previews == 2


def test_closing_cancels_what_waits_and_what_runs() -> None:
    lanes = Lanes(limit=4, encode_preview=_png)
    never, started = threading.Event(), threading.Event()
    running = Job("r", "m", {}, _blocker(never, started))
    queued = Job("q", "m", {}, lambda ctx: {})
    lanes.submit(running)
    assert started.wait(5)
    lanes.submit(queued)
    lanes.close()
    assert queued.state == "cancelled"
    _wait(running)
    assert running.state == "cancelled"
    with pytest.raises(UserInputError):
        lanes.submit(Job("late", "m", {}, lambda ctx: {}))


def test_the_limit_is_checked() -> None:
    with pytest.raises(UserInputError):
        Lanes(limit=0, encode_preview=_png)
