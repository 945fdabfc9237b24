import atexit
import os
import shutil
import tempfile

import pytest

from apl.ops import dispatch, health, notices

# Inductor's on-disk cache does not see a change in a custom op's output shapes (docs/api.md): each
# run compiles into a folder of its own, so that a graph cached by another build of apl is never loaded.
_INDUCTOR_CACHE = tempfile.mkdtemp(prefix="apl-tests-inductor-")
os.environ["TORCHINDUCTOR_CACHE_DIR"] = _INDUCTOR_CACHE
atexit.register(shutil.rmtree, _INDUCTOR_CACHE, ignore_errors=True)


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
