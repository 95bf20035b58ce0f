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
