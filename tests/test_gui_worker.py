"""app.gui.worker: the one helper the GUI runs work off the UI thread with (real Qt, offscreen,
real threads)."""
from __future__ import annotations

import threading

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

import shiboken6  # noqa: E402
from PySide6.QtCore import QObject  # noqa: E402

from app.gui.worker import ExtractionRunner, Worker, WorkerPool, live_workers  # noqa: E402
from app.service.extraction import ExtractionRequest  # noqa: E402


def _record(w: Worker) -> list:
    """Every signal of ``w`` as (name, value, thread the slot ran in)."""
    seen: list = []
    main = threading.current_thread

    for name in ("started", "finished", "cancelled"):
        getattr(w, name).connect(lambda name=name: seen.append((name, None, main().name)))
    for name in ("progress", "yielded", "returned", "errored"):
        getattr(w, name).connect(lambda v, name=name: seen.append((name, v, main().name)))
    return seen


def test_returns_in_a_worker_thread_and_reports_on_the_ui_thread(qtbot) -> None:
    ran_in = []

    def job(a: int, b: int, on_progress) -> int:
        ran_in.append(threading.current_thread().name)
        for k in range(3):
            on_progress(k, 3, "adding")
        return a + b

    w = Worker(job, 2, b=5, progress_arg="on_progress", name="adder")
    seen = _record(w)
    with qtbot.waitSignal(w.finished, timeout=10_000):
        w.start()
    ui = threading.current_thread().name
    assert ran_in and ran_in[0] != ui
    assert [s[0] for s in seen] == ["started", "progress", "progress", "progress", "returned",
                                    "finished"]
    assert [s[1] for s in seen if s[0] == "progress"] == [(0, 3, "adding"), (1, 3, "adding"),
                                                          (2, 3, "adding")]
    assert seen[4][1] == 7
    assert {s[2] for s in seen} == {ui}  # every slot ran on the UI thread
    assert not w.is_running() and w not in live_workers()


def test_an_exception_is_delivered_as_errored_not_raised(qtbot) -> None:
    def job() -> None:
        raise ValueError("bad tile 3")

    w = Worker(job)
    seen = _record(w)
    with qtbot.waitSignal(w.errored, timeout=10_000) as blocker:
        w.start()
    qtbot.waitUntil(lambda: seen and seen[-1][0] == "finished", timeout=5_000)
    exc = blocker.args[0]
    assert isinstance(exc, ValueError) and str(exc) == "bad tile 3"
    assert exc.__traceback__ is not None  # details for an error dialog
    assert "returned" not in [s[0] for s in seen]


def test_cancel_is_seen_by_a_cooperative_function(qtbot) -> None:
    started = threading.Event()
    polls = []

    def job(should_cancel) -> str:
        started.set()
        while not should_cancel():
            polls.append(1)
            threading.Event().wait(0.01)
        return "stopped early"

    w = Worker(job, cancel_arg="should_cancel")
    w.start()
    assert started.wait(10)
    with qtbot.waitSignal(w.returned, timeout=10_000) as blocker:
        w.cancel()
    assert blocker.args == ["stopped early"] and w.is_cancelled()


def test_cancel_stops_a_generator_between_items(qtbot) -> None:
    closed = threading.Event()
    first = threading.Event()

    def gen():
        try:
            k = 0
            while True:
                yield k
                first.set()
                k += 1
                threading.Event().wait(0.01)
        finally:
            closed.set()

    w = Worker(gen)
    seen = _record(w)
    w.start()
    assert first.wait(10)
    with qtbot.waitSignal(w.finished, timeout=10_000):
        w.cancel()
    names = [s[0] for s in seen]
    assert closed.is_set()  # the generator was closed (its finally ran)
    assert names[-2:] == ["cancelled", "finished"] and "returned" not in names
    items = [s[1] for s in seen if s[0] == "yielded"]
    assert items and items == list(range(len(items)))  # in order, none lost or repeated


def test_a_generator_return_value_is_returned(qtbot) -> None:
    def gen():
        yield "a"
        yield "b"
        return "done"

    w = Worker(gen)
    seen = _record(w)
    with qtbot.waitSignal(w.finished, timeout=10_000):
        w.start()
    assert [(s[0], s[1]) for s in seen] == [("started", None), ("yielded", "a"), ("yielded", "b"),
                                            ("returned", "done"), ("finished", None)]


def test_a_pool_runs_in_order_and_a_worker_cancelled_before_it_starts_never_runs(qtbot) -> None:
    pool = WorkerPool("test-pool", 1)
    gate = threading.Event()
    order = []
    try:
        first = Worker(lambda: (gate.wait(10), order.append("first"))[1], pool=pool)
        second = Worker(lambda: order.append("second"), pool=pool)
        third = Worker(lambda: order.append("third"), pool=pool)
        seen2 = _record(second)
        for w in (first, second, third):
            w.start()
        second.cancel()  # still queued behind `first`
        with qtbot.waitSignal(third.finished, timeout=10_000):
            gate.set()
        assert order == ["first", "third"]
        assert [s[0] for s in seen2] == ["cancelled", "finished"]
    finally:
        gate.set()
        pool.shutdown()


def test_wait_delivers_everything_in_order_without_the_event_loop(qtbot) -> None:
    def job(on_progress) -> str:
        on_progress(1)
        on_progress(2)
        return "ok"

    w = Worker(job, progress_arg="on_progress")
    seen = _record(w)
    w.start()
    assert w.wait(10)
    assert [(s[0], s[1]) for s in seen] == [("started", None), ("progress", (1,)),
                                            ("progress", (2,)), ("returned", "ok"),
                                            ("finished", None)]
    assert w.wait(0)  # already done: nothing delivered twice
    assert len(seen) == 5
    with pytest.raises(RuntimeError, match="already started"):
        w.start()


def test_signals_are_dropped_once_the_owner_is_deleted(qtbot) -> None:
    owner = QObject()
    gate = threading.Event()
    w = Worker(lambda: gate.wait(10) and "late", owner=owner)
    seen = _record(w)
    w.start()
    owner.deleteLater()
    qtbot.waitUntil(lambda: not shiboken6.isValid(owner), timeout=5_000)
    gate.set()
    assert w.wait(10)
    qtbot.wait(50)
    assert [s for s in seen if s[0] != "started"] == []  # nothing reaches a deleted panel
    assert w.is_cancelled() and not w.is_running()


def test_extraction_runner_turns_a_crash_into_a_failed_result(qtbot, tmp_path) -> None:
    def crash(request, on_progress, should_cancel):
        on_progress(1, 4, "tiles")
        raise ZeroDivisionError("tile weights")

    runner = ExtractionRunner()
    progress = []
    runner.progress.connect(lambda d, t, s: progress.append((d, t, s)))
    req = ExtractionRequest(image=str(tmp_path / "in.tif"), out_dir=str(tmp_path / "out"))
    with qtbot.waitSignal(runner.finished, timeout=10_000) as blocker:
        runner.start(req, run_fn=crash)
    res = blocker.args[0]
    assert res.status == "failed" and res.internal_error
    assert res.error == "ZeroDivisionError: tile weights"
    assert progress == [(1, 4, "tiles")] and not runner.is_running()
