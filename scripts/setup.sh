#!/usr/bin/env bash
# Installs what squeeze needs to build and test, and nothing that is already there. Safe to run
# again and again: when everything is present it prints nothing and makes no network call.
set -euo pipefail

# Debian packages for the build (compiler, CMake, Ninja), the libraries DESIGN.md chooses, the test
# frameworks, and curl for fetching the default model.
packages=(
  g++ cmake ninja-build pkg-config make
  libpcre2-dev nlohmann-json3-dev libcli11-dev libfmt-dev libspdlog-dev
  libxxhash-dev libssl-dev libcpp-httplib-dev
  zlib1g-dev libbz2-dev liblzma-dev libzstd-dev libbrotli-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  curl ca-certificates
)

missing=()
for pkg in "${packages[@]}"; do
  # "install ok installed" is the only state in which the files are really there; dpkg -s alone
  # also succeeds for packages that were removed but not purged.
  if ! dpkg -s "$pkg" 2>/dev/null | grep -x 'Status: install ok installed' >/dev/null; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} > 0)); then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup.sh: missing packages: ${missing[*]}" >&2
    echo "setup.sh: apt-get is not available; install them with your system's package manager." >&2
    exit 1
  fi
  sudo_cmd=()
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo_cmd=(sudo)
    else
      echo "setup.sh: missing packages: ${missing[*]}" >&2
      echo "setup.sh: not running as root and sudo is not installed; run as root:" >&2
      echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
      exit 1
    fi
  fi
  echo "setup.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! "${sudo_cmd[@]}" apt-get update -qq; then
    echo "setup.sh: 'apt-get update' failed; check the network and /etc/apt/sources.list." >&2
    exit 1
  fi
  if ! "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
    echo "setup.sh: could not install: ${missing[*]}" >&2
    echo "setup.sh: check that these package names exist on this release (apt-cache policy NAME)." >&2
    exit 1
  fi
  # Make sure the install really produced every package, so a silent partial failure is caught here
  # and not as a confusing CMake error later.
  still=()
  for pkg in "${missing[@]}"; do
    dpkg -s "$pkg" 2>/dev/null | grep -x 'Status: install ok installed' >/dev/null || still+=("$pkg")
  done
  if ((${#still[@]} > 0)); then
    echo "setup.sh: still missing after apt-get install: ${still[*]}" >&2
    exit 1
  fi
fi

# --- npm -------------------------------------------------------------------------------------
# The tests hold squeeze against real clients: the reference Jinja renderer (@huggingface/jinja)
# and the official OpenAI JavaScript client. package-lock.json at the repository root pins them;
# npm ci installs exactly that. Node.js comes from Debian when the machine has none (a Node.js that
# is already installed, from Debian or elsewhere, is used as it is).
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -f "$repo_root/package-lock.json" ]]; then
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1; then
      echo "setup.sh: Node.js and npm are needed for the client tests; install them (node >= 18)." >&2
      exit 1
    fi
    sudo_cmd=()
    if [[ $(id -u) -ne 0 ]]; then
      command -v sudo >/dev/null 2>&1 && sudo_cmd=(sudo)
    fi
    echo "setup.sh: installing nodejs npm" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    if ! "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends nodejs npm; then
      echo "setup.sh: could not install nodejs and npm with apt-get." >&2
      exit 1
    fi
  fi
  # Reinstalls only when the lock file is newer than what node_modules was built from.
  if [[ ! -f "$repo_root/node_modules/.package-lock.json" ||
        "$repo_root/package-lock.json" -nt "$repo_root/node_modules/.package-lock.json" ]]; then
    (cd "$repo_root" && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
