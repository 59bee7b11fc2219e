#!/usr/bin/env bash
# The whole check, from nothing: a virtual environment, the project with its test extras,
# then ruff, mypy --strict on our packages, and every test (unit, integration, e2e).
# Needs python3 (3.11+) and the PostgreSQL on 127.0.0.1:5432; the tests start the broker. As root
# with apt, it also installs the non-Python tools the tests drive (tests/tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]' 2> >(grep -v "is ignored: it is neither" >&2)
# Chromium, promtool, amtool and Docker Compose, each only when missing (tests/tools.sh says which and why).
bash tests/tools.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Two test processes (LIANDONG_TEST_PROCESSES), each taking whole files, so that a module's shared
# fixtures (a broker, a hub's processes) start once. Every test makes its own database, broker port
# and data directory, so the two never meet.
.venv/bin/python -m pytest -n "${LIANDONG_TEST_PROCESSES:-2}" --dist loadfile --durations=15 "$@"
