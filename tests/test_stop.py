"""train/stop.py: the first stop request is the one kept, it is acted on through Preempted, and
the exit code is 75. (The signals themselves, delivered to a real trainer, are
tests/test_faults.py's and test_launch.py's; forwarded_name() is tests/test_cluster.py's.)"""

import pytest

from train.stop import PREEMPTED_EXIT, STOP_NAMES, Preempted, StopRequest


def test_the_first_request_is_kept():
    stop = StopRequest()  # not installed: the signals stay pytest's
    assert not stop.requested
    stop.check()  # nothing requested: no stop
    stop.request("SIGTERM")
    stop.request("SIGINT")  # a second signal while stopping changes nothing
    assert stop.requested and stop.signal_name == "SIGTERM"
    with pytest.raises(Preempted, match="^SIGTERM: stopped while converting the data; nothing "
                                        "was trained$"):
        stop.check("while converting the data")


def test_a_request_outside_forming_does_not_end_the_process():
    stop = StopRequest()
    with stop.forming("joining the cluster"):
        assert stop._forming == "joining the cluster"
    assert stop._forming is None
    stop.request("SIGHUP")  # after forming: recorded for the loop, the process goes on
    assert stop.signal_name == "SIGHUP"


def test_the_stop_contract():
    assert PREEMPTED_EXIT == 75  # EX_TEMPFAIL, the documented "stopped with a checkpoint"
    assert set(STOP_NAMES) == {"TERM", "INT", "HUP", "USR1"}
    assert issubclass(Preempted, RuntimeError)

