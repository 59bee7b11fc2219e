"""Hypothesis profiles for the fuzz tests: bounded everywhere, deterministic in CI.

- `ci` (chosen when the `CI` environment variable is set): the same examples on every run
  (`derandomize`), so that a red build is reproducible and never flaky;
- `dev` (the default): the same bounds, fresh examples on every run, so that local runs keep
  exploring; a failure is saved in `.hypothesis/` and replayed first next time;
- `deep`: for a long hunt by hand, `HYPOTHESIS_PROFILE=deep pytest tests/fuzz`.

No deadline: a 2-core machine shared with a broker and PostgreSQL has slow moments that are not
the code's fault.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# function_scoped_fixture: the gateway fuzz reuses one running hub across examples on purpose.
_BASE = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    print_blob=True,
)
settings.register_profile("ci", parent=_BASE, max_examples=200, derandomize=True)
settings.register_profile("dev", parent=_BASE, max_examples=200)
settings.register_profile("deep", parent=_BASE, max_examples=20_000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))
