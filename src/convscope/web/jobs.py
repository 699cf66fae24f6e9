"""The web app's workers: one lane per model, each a thread running one job at a time from a
bounded queue.

A job is a function of a `JobContext`. Its progress events (the library's typed `Progress`)
are kept on the job, in order, for the page's live view; a `SynthesisProgress` preview
becomes the job's current preview PNG. Cancelling a queued job takes it out of the queue;
cancelling a running one makes its next progress event raise `JobCancelled`, so the library
call unwinds (releasing its hooks) and the lane starts its next job at once.
"""

from __future__ import annotations

import collections
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from convscope.errors import UserInputError
from convscope.events import Progress

__all__ = [
    "Job",
    "JobCancelled",
    "JobContext",
    "JobState",
    "Lanes",
    "QueueFull",
    "new_id",
]

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
FINISHED: tuple[JobState, ...] = ("done", "failed", "cancelled")
KEPT_EVENTS = 2000
"""Events a job keeps (the newest; a page that joins late sees the latest state)."""


def new_id() -> str:
    """A random id for a job, an upload or a result (22 URL-safe characters)."""
    return secrets.token_urlsafe(16)


class JobCancelled(Exception):
    """Raised inside a cancelled job at its next progress event."""


class QueueFull(Exception):
    """A lane's queue is at its limit; `retry_after` is a guess in seconds."""

    def __init__(self, lane: str, retry_after: int) -> None:
        super().__init__(f"the queue for {lane} is full; try again in {retry_after} s.")
        self.retry_after = retry_after


@dataclass
class Job:
    kind: str
    lane: str
    params: Mapping[str, Any]
    run: Callable[[JobContext], dict[str, Any]]
    id: str = field(default_factory=new_id)
    state: JobState = "queued"
    events: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=KEPT_EVENTS)
    )
    count: int = 0  # events so far (the deque keeps the newest)
    preview: bytes | None = None  # the newest preview PNG
    previews: int = 0
    result: dict[str, Any] | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)
    _done_callbacks: list[Callable[[Job], None]] = field(default_factory=list)

    def add_done_callback(self, fn: Callable[[Job], None]) -> None:
        """`fn(job)` once the job has finished (at once if it has)."""
        with self.changed:
            if self.state not in FINISHED:
                self._done_callbacks.append(fn)
                return
        fn(self)

    def _touch(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def _finish(
        self, state: JobState, *, result: dict[str, Any] | None = None, error: str = ""
    ) -> None:
        with self.changed:
            self.state = state
            self.result = result
            self.error = error or None
            self.finished = time.time()
            callbacks, self._done_callbacks = self._done_callbacks, []
            self.changed.notify_all()
        for fn in callbacks:
            fn(self)

    def summary(self, position: int | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "lane": self.lane,
            "state": self.state,
            "position": position,
            "events": self.count,
            "last": self.events[-1] if self.events else None,
            "previews": self.previews,
            "result": self.result,
            "error": self.error,
        }


class JobContext:
    """What a running job sees: its parameters, a progress callback for the library, and a
    way to attach preview images."""

    def __init__(self, job: Job, encode_preview: Callable[[Any], bytes]) -> None:
        self.job = job
        self._encode = encode_preview

    @property
    def cancelled(self) -> bool:
        return self.job.cancel.is_set()

    def check(self) -> None:
        """Raise `JobCancelled` if the job was cancelled."""
        if self.job.cancel.is_set():
            raise JobCancelled()

    def on_progress(self, event: Progress) -> None:
        """The library's progress callback: record the event, keep its preview, and stop the
        job here if it was cancelled."""
        self.check()
        preview = getattr(event, "preview", None)
        if preview is not None:
            self.set_preview(preview)
        record = {
            "task": event.task,
            "done": event.done,
            "total": event.total,
            "unit": event.unit,
            "message": event.message,
            "metrics": {k: float(v) for k, v in event.metrics.items()},
            "preview": self.job.previews if preview is not None else None,
            "time": time.time(),
        }
        job = self.job
        with job.changed:
            job.events.append(record)
            job.count += 1
            job.changed.notify_all()

    def set_preview(self, image: Any) -> None:
        png = self._encode(image)
        job = self.job
        with job.changed:
            job.preview = png
            job.previews += 1
            job.changed.notify_all()


class _Lane:
    def __init__(self, name: str, limit: int, encode: Callable[[Any], bytes]) -> None:
        self.name = name
        self.limit = limit
        self.encode = encode
        self.pending: collections.deque[Job] = collections.deque()
        self.running: Job | None = None
        self.lock = threading.Condition()
        self.closed = False
        self.seconds = collections.deque([2.0], maxlen=20)  # recent job durations
        self.thread = threading.Thread(target=self._work, name=f"convscope-{name}", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> int:
        with self.lock:
            if self.closed:
                raise UserInputError("the server is shutting down.")
            if len(self.pending) >= self.limit:
                mean = sum(self.seconds) / len(self.seconds)
                raise QueueFull(self.name, max(1, round(mean * (len(self.pending) + 1))))
            self.pending.append(job)
            self.lock.notify_all()
            return len(self.pending) - 1 + (self.running is not None)

    def position(self, job: Job) -> int | None:
        """0 while running, 1 for the next one, …; None when finished."""
        with self.lock:
            if self.running is job:
                return 0
            for i, queued in enumerate(self.pending):
                if queued is job:
                    return i + 1 if self.running is not None else i
        return None

    def cancel(self, job: Job) -> None:
        with self.lock:
            if job in self.pending:
                self.pending.remove(job)
                job._finish("cancelled")
                return
        job.cancel.set()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            for job in self.pending:
                job._finish("cancelled")
            self.pending.clear()
            if self.running is not None:
                self.running.cancel.set()
            self.lock.notify_all()

    def _work(self) -> None:
        while True:
            with self.lock:
                while not self.pending and not self.closed:
                    self.lock.wait()
                if self.closed:
                    return
                job = self.pending.popleft()
                self.running = job
            self._run(job)
            with self.lock:
                self.running = None

    def _run(self, job: Job) -> None:
        job.started = time.time()
        with job.changed:
            job.state = "running"
            job.changed.notify_all()
        context = JobContext(job, self.encode)
        try:
            context.check()
            result = job.run(context)
        except JobCancelled:
            job._finish("cancelled")
        except UserInputError as exc:
            job._finish("failed", error=str(exc))
        except Exception as exc:  # an internal error: the job fails, the lane goes on
            job._finish("failed", error=f"internal error: {type(exc).__name__}: {exc}")
        else:
            if job.cancel.is_set():
                job._finish("cancelled")
            else:
                job._finish("done", result=result)
        self.seconds.append(time.time() - job.started)


class Lanes:
    """Every lane of a server, by name, created on first use; and every job, by id."""

    def __init__(self, *, limit: int, encode_preview: Callable[[Any], bytes]) -> None:
        if limit < 1:
            raise UserInputError(f"the queue limit must be at least 1, got {limit}.")
        self.limit = limit
        self._encode = encode_preview
        self._lanes: dict[str, _Lane] = {}
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def _lane(self, name: str) -> _Lane:
        with self._lock:
            lane = self._lanes.get(name)
            if lane is None:
                lane = self._lanes[name] = _Lane(name, self.limit, self._encode)
            return lane

    def submit(self, job: Job) -> int:
        """Queue `job` on its lane; its position (0: running now). Raises `QueueFull`."""
        position = self._lane(job.lane).submit(job)
        with self._lock:
            self._jobs[job.id] = job
        return position

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def position(self, job: Job) -> int | None:
        return self._lane(job.lane).position(job)

    def cancel(self, job: Job) -> None:
        self._lane(job.lane).cancel(job)

    def close(self) -> None:
        with self._lock:
            lanes = list(self._lanes.values())
        for lane in lanes:
            lane.close()
        for lane in lanes:
            lane.thread.join(timeout=5)
