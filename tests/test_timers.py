"""The timer thread (clinit.timers): order, cancel, dead actors."""

from __future__ import annotations

import threading


from clinit import timers
from conftest import Inbox, Recorder, wait_for


def test_messages_arrive_in_order_of_their_due_time():
    inbox = Inbox()
    timers.after(0.06, inbox, "third")
    timers.after(0.02, inbox, "first")
    timers.after(0.04, inbox, "second")
    wait_for(lambda: len(inbox.messages()) == 3)
    assert inbox.messages() == ["first", "second", "third"]


def test_messages_due_at_once_arrive_in_the_order_they_were_set():
    inbox = Inbox()
    for i in range(50):
        timers.after(0, inbox, i)
    wait_for(lambda: len(inbox.messages()) == 50)
    assert inbox.messages() == list(range(50))


def test_a_negative_delay_means_now():
    inbox = Inbox()
    timers.after(-5, inbox, "now")
    wait_for(lambda: inbox.messages() == ["now"])


def test_a_cancelled_timer_never_fires():
    inbox = Inbox()
    handle = timers.after(0.02, inbox, "cancelled")
    timers.cancel(handle)
    timers.after(0.04, inbox, "kept")
    wait_for(lambda: inbox.messages() == ["kept"])
    assert "cancelled" not in inbox.messages()


def test_cancel_is_harmless_for_none_for_a_fired_timer_and_for_an_unknown_handle():
    inbox = Inbox()
    handle = timers.after(0, inbox, "fired")
    wait_for(lambda: inbox.messages() == ["fired"])
    timers.cancel(handle)
    timers.cancel(None)
    timers.cancel(10**12)
    timers.after(0, inbox, "still works")
    wait_for(lambda: inbox.messages() == ["fired", "still works"])


def test_pending_counts_waiting_timers_but_not_cancelled_ones():
    inbox = Inbox()
    # hold the timer lock (reentrant) so that no other test's timer fires meanwhile
    with timers._lock:
        before = timers.pending()
        a = timers.after(30, inbox, "a")
        b = timers.after(30, inbox, "b")
        assert timers.pending() == before + 2
        timers.cancel(a)
        timers.cancel(b)
        assert timers.pending() == before


def test_an_earlier_timer_set_later_wakes_the_thread_sooner():
    inbox = Inbox()
    late = timers.after(30, inbox, "late")
    timers.after(0.01, inbox, "early")
    wait_for(lambda: inbox.messages() == ["early"])
    timers.cancel(late)


def test_a_message_to_a_stopped_actor_is_dropped_and_the_thread_goes_on():
    dead = Recorder.start()
    dead.stop()
    live = Recorder.start()
    try:
        timers.after(0, dead, "lost")
        timers.after(0.02, live, "delivered")
        wait_for(lambda: live.proxy().messages().get() == ["delivered"])
    finally:
        live.stop()


def test_a_timer_delivers_to_a_live_actor():
    ref = Recorder.start()
    try:
        timers.after(0.01, ref, ("timeout", 1))
        wait_for(lambda: ref.proxy().messages().get() == [("timeout", 1)])
    finally:
        ref.stop()


def test_timers_set_from_many_threads_are_all_delivered():
    inbox = Inbox()

    def setter(n):
        for i in range(20):
            timers.after(0.001 * (i % 3), inbox, (n, i))

    threads = [threading.Thread(target=setter, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_for(lambda: len(inbox.messages()) == 100)
    assert sorted(inbox.messages()) == [(n, i) for n in range(5) for i in range(20)]
