"""The Jobs API client's bounded wait for a head that is not (yet) taking jobs."""

from __future__ import annotations

import socket
import time

import pytest

from paretoforge.exceptions import ParetoforgeError


def test_submit_to_a_head_that_never_answers_is_one_line_within_the_bound() -> None:
    pytest.importorskip("ray.job_submission")
    from paretoforge.orchestrator.jobs import _submit_when_ready

    with socket.socket() as s:  # a free port, closed again: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(ParetoforgeError) as err:
        _submit_when_ready(f"http://127.0.0.1:{port}", timeout_s=3, poll_s=0.5,
                           entrypoint="true")
    took = time.monotonic() - t0
    assert 2.5 <= took < 30, took  # it retried for the bound, and no longer
    msg = str(err.value)
    assert "\n" not in msg
    assert f"127.0.0.1:{port}" in msg and "within 3 s" in msg
    assert "PARETOFORGE_JOBS_READY_TIMEOUT_S" in msg


def test_submit_needs_the_dashboards_http_address() -> None:
    from paretoforge.orchestrator.jobs import _submit_when_ready

    with pytest.raises(ParetoforgeError, match="dashboard's HTTP address"):
        _submit_when_ready("127.0.0.1:6379", timeout_s=3, entrypoint="true")
