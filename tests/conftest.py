import pytest

from apl.ops import dispatch, health, notices


@pytest.fixture(autouse=True)
def fresh_notices():
    """Every test starts with the once-per-process warnings unsaid and the self-checks unrun, and
    leaves them so: one test's warning cannot hide another's."""
    notices.reset()
    health.reset()
    dispatch.forget_self_checks()
    yield
    notices.reset()
    health.reset()
    dispatch.forget_self_checks()
