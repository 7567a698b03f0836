"""`on_short_thread`: models are loaded on a thread that ends with the load (lmforge/threads.py)."""

import threading

import pytest

from lmforge.errors import UserError
from lmforge.threads import on_short_thread


def test_returns_the_result_from_another_thread_that_has_ended():
    seen = []
    assert on_short_thread(lambda: seen.append(threading.current_thread()) or 42) == 42
    assert seen[0] is not threading.current_thread() and not seen[0].is_alive()


def test_reraises_the_error_in_the_caller():
    def fail():
        raise UserError("model not found: nope")
    with pytest.raises(UserError, match="model not found: nope"):
        on_short_thread(fail)


def test_a_server_loads_its_model_off_the_main_thread(monkeypatch, tmp_path):
    from lmforge.serve import server

    loaded_on = []

    class Stop(Exception):
        pass

    def fake_from_run(*args, **kwargs):
        loaded_on.append(threading.current_thread())
        raise Stop
    monkeypatch.setattr("lmforge.predictor.Predictor.from_run", fake_from_run)
    monkeypatch.setattr(server, "serves_generation", lambda _: False)
    with pytest.raises(Stop):
        server.serve(tmp_path, server.ServeSettings(port=0))
    assert loaded_on and loaded_on[0] is not threading.main_thread()
