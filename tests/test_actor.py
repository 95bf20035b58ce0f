"""The lean actor base: its stop flag behaves like the Event it replaces."""

import threading

from clinit.actor import Actor, Flag
from conftest import wait_for


def test_a_flag_is_set_once_and_wakes_every_waiter():
    flag = Flag()
    assert not flag.is_set() and flag.wait(0.01) is False
    woke = []
    waiters = [threading.Thread(target=lambda: woke.append(flag.wait(10))) for _ in range(5)]
    for t in waiters:
        t.start()
    flag.set()
    for t in waiters:
        t.join(10)
    assert flag.is_set() and woke == [True] * 5 and flag.wait() is True


class Echo(Actor):
    def on_receive(self, message):
        return message


def test_a_lean_actor_answers_and_its_ref_sees_it_stop():
    ref = Echo.start()
    assert ref.ask("hi") == "hi" and ref.is_alive()
    ref.stop()
    assert not ref.is_alive() and ref.actor_stopped.is_set()
    wait_for(lambda: not any(t.name.startswith("Echo-") and t.is_alive()
                             for t in threading.enumerate()))


class Lean(Actor):
    lean_thread = True

    def on_receive(self, message):
        if message == "name":
            return threading.current_thread().name  # registers a dummy Thread for this thread
        return message


def test_a_lean_actor_runs_on_a_bare_thread_that_leaves_nothing_in_threading():
    before = len(threading.enumerate())
    refs = [Lean.start() for _ in range(20)]
    assert all(ref.ask(i) == i for i, ref in enumerate(refs))
    assert len(threading.enumerate()) == before  # bare threads: not threading.Threads
    assert all(ref.ask("name").startswith("Dummy-") for ref in refs)
    assert len(threading.enumerate()) == before + 20
    for ref in refs:
        ref.stop()
    wait_for(lambda: len(threading.enumerate()) == before)  # each dropped its dummy as it ended


def test_a_lean_actor_gets_the_trace_hook_that_threading_gives_its_threads():
    seen = []

    def hook(frame, event, arg):
        if frame.f_code.co_name == "on_receive":
            seen.append(event)
        return None

    threading.settrace(hook)
    try:
        ref = Lean.start()
        assert ref.ask("x") == "x"
        ref.stop()
    finally:
        threading.settrace(None)
    assert "call" in seen  # coverage and profilers see the actor's code
