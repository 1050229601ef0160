#!/usr/bin/env bash
# setup.sh: makes this machine ready to build and test adaptd, and builds it.
#   - installs the Debian packages that are missing (one `apt-get update`, then one install);
#   - makes the pinned Python reference environment (tests/requirements.txt) in a cache folder
#     keyed by the file's hash, so a fresh clone on a prepared machine reuses it in seconds;
#   - configures and builds build/ (release-like, CUDA compiled when nvcc is present).
# Idempotent: on a prepared machine it only checks and rebuilds what changed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

debian_packages=(
  meson ninja-build pkg-config gcc clang libclang-rt-14-dev
  protobuf-c-compiler libprotobuf-c-dev libzstd-dev libuv1-dev libcjson-dev libsqlite3-dev
  libjpeg62-turbo-dev libturbojpeg0-dev libpng-dev libpcre2-dev libyaml-dev
  libicu-dev libopenblas-dev libopenmpi-dev openmpi-bin node-llhttp
  chromium wrk  # the status page test (headless) and tools/scripts/bench_daemon.sh
)

missing=()
for p in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# CUDA lives outside PATH on these machines; CI compiles the CUDA sources whenever nvcc exists.
if [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi

# The Python references: one venv per requirements hash.
req_hash=$(sha256sum tests/requirements.txt | cut -c1-16)
venv="${ADAPT_VENV_CACHE:-$HOME/.cache/adaptd}/venv-$req_hash"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "setup: making the reference venv $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/requirements.txt
  touch "$venv/.complete"
fi
# .venv in the tree points at it, so tests and people find it at a fixed place.
if [ ! -e .venv ] || [ -L .venv ]; then ln -sfn "$venv" .venv; fi

if [ ! -f build/build.ninja ]; then
  meson setup build
fi
ninja -C build
