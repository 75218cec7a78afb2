"""Fixtures: a real corrald per test module, checked for leftovers at teardown.

A module may set DAEMON_ARGS = [...] (extra corrald flags, e.g. ["--retention", "1"]).
Environment: CORRALD=path overrides build/corrald; CORRAL_TEST_TIMEOUT (seconds, default 180)
bounds every test.
"""
import os
import signal

import pytest

import harness


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running (many sandboxes); deselect with -m 'not slow'")
    config.addinivalue_line("markers", "timeout(seconds): per-test time limit (default CORRAL_TEST_TIMEOUT)")


@pytest.fixture(autouse=True)
def _time_limit(request):
    """A hung daemon must fail a test, not hang the run (pytest-timeout is not installed)."""
    m = request.node.get_closest_marker("timeout")
    seconds = int(m.args[0]) if m else int(os.environ.get("CORRAL_TEST_TIMEOUT", "180"))

    def expired(signum, frame):
        raise TimeoutError(f"test exceeded {seconds}s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _require_root():
    if os.geteuid() != 0:
        pytest.skip("corrald needs root here (namespaces, cgroups under /sys/fs/cgroup); "
                    "run the integration tests as root")


@pytest.fixture(scope="module")
def daemon(request):
    """A corrald on fresh temp dirs with a unique --cgroup-parent, serving until the module ends.
    Teardown terminates every sandbox, SIGTERMs the daemon and asserts the host is clean."""
    _require_root()
    d = harness.Daemon(extra_args=getattr(request.module, "DAEMON_ARGS", ()))
    try:
        d.start()
    except Exception as e:
        problems = d.shutdown_and_check()
        pytest.fail(f"corrald failed to start: {e}\n" + "\n".join(problems))
    yield d
    problems = d.shutdown_and_check()
    assert not problems, "host not clean after corrald stopped:\n" + "\n".join(problems)


@pytest.fixture
def stub(daemon):
    """The SandboxService stub of the module's daemon (re-read after a restart)."""
    return daemon.sb


@pytest.fixture
def restart_daemon(daemon):
    """restart_daemon() SIGKILLs corrald and starts it again on the same state dir;
    restart_daemon(signal.SIGTERM) does a clean stop instead. Returns the daemon (new stubs)."""
    def restart(how=signal.SIGKILL):
        return daemon.restart(how)
    return restart


@pytest.fixture
def sandbox(daemon):
    """A fresh idle busybox sandbox, terminated after the test."""
    sb = harness.create_sandbox(daemon.sb)
    yield sb
    if daemon.running():
        try:
            harness.terminate(daemon.sb, sb.sandbox_id)
        except Exception:
            pass  # already finished and purged, or the test broke the daemon: teardown reports
