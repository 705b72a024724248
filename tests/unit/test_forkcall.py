"""call_in_child: the value comes back; an error in the child comes back as
itself (type, message, traceback), and a death or a hang is decoded, never a
raw waitpid status."""
from __future__ import annotations

import os
import time

import pytest

from disqontrol_client.errors import DisqontrolError
from disqontrold.forkcall import NoAnswer, call_in_child

DOING = "validating the test config"
GENEROUS = 30.0  # s: a loaded machine must not turn a quick child into a timeout
HANG_TIMEOUT = 0.5
HANG_FOR = 60.0


def _fails() -> None:
    raise RuntimeError("the disk is on fire")


def _hangs() -> None:
    time.sleep(HANG_FOR)  # the subject: a child that never answers


def test_the_value_comes_back():
    assert call_in_child(lambda: {"pid": os.getpid()}, GENEROUS, DOING)["pid"] != os.getpid()


def test_an_unexpected_error_comes_back_with_its_type_message_and_traceback():
    with pytest.raises(NoAnswer) as caught:
        call_in_child(_fails, GENEROUS, DOING)
    error = caught.value
    assert isinstance(error, DisqontrolError)
    assert str(error).startswith(f"{DOING}: the checker raised RuntimeError: the disk is on fire (at File ")
    assert "in _fails" in str(error)
    assert "Traceback (most recent call last)" in error.traceback and "_fails" in error.traceback


def test_an_unpicklable_value_is_reported_not_lost():
    with pytest.raises(NoAnswer, match=f"^{DOING}: the checker raised .*(pickle|lambda)"):
        call_in_child(lambda: (lambda: None), GENEROUS, DOING)


def test_a_child_that_dies_is_decoded_with_its_exit_code():
    with pytest.raises(NoAnswer, match=f"^{DOING}: the checker ended \\(exit code 3\\) without answering$"):
        call_in_child(lambda: os._exit(3), GENEROUS, DOING)


@pytest.mark.timeout(30)
def test_a_child_past_its_timeout_is_killed_and_named_so():
    started = time.monotonic()
    with pytest.raises(NoAnswer, match="took longer than 0.5s") as caught:
        call_in_child(_hangs, HANG_TIMEOUT, DOING)
    assert time.monotonic() - started < HANG_FOR / 2
    assert caught.value.traceback == ""
