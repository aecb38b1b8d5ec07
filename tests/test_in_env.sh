#!/usr/bin/env bash
# Host-side checks of scripts/in-env, which pytest cannot make (pytest runs inside the
# environment): the host's files are visible inside at their own paths, outputs written
# inside reach the host, and two checkouts share one environment, each importing its own
# code without re-syncing it. Run on the host by `make test-env` (and so `make test`); it
# checks whichever environment this host gets (plain venv or Debian rootfs).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
failures=0

say() { printf '[test_in_env] %s\n' "$*"; }
fail() { printf '[test_in_env] FAIL: %s\n' "$*" >&2; failures=$((failures + 1)); }

# expect WHAT GOT WANTED
expect() {
  if [ "$2" = "$3" ]; then say "  ok"; else fail "$1: got '$2', expected '$3'"; fi
}

home_dir=$(mktemp -d "$HOME/tfxp-in-env-test.XXXX")
scratch=$(mktemp -d /tmp/tfxp-in-env-test.XXXX)  # the second checkout and a FIFO
clone="$scratch/clone"
trap 'rm -rf "$home_dir" "$scratch"' EXIT

# --- (a) a file under $HOME, outside the repository, is readable inside ----------------
say "a CSV under \$HOME ($home_dir/data.csv) is readable inside the environment"
printf 'species,mass\nAdelie,3750\n' >"$home_dir/data.csv"
got=$("$repo/scripts/in-env" python -c 'import sys; print(open(sys.argv[1]).read(), end="")' \
  "$home_dir/data.csv") || true
expect "reading $home_dir/data.csv inside" "$got" "$(cat "$home_dir/data.csv")"

say "HOME inside the environment is the host's ($HOME)"
got=$("$repo/scripts/in-env" sh -c 'printf %s "$HOME"') || true
expect "HOME inside" "$got" "$HOME"

# --- (b) a file written inside, under $HOME, is on the host -----------------------------
say "a file written inside to $home_dir/written.txt appears on the host"
"$repo/scripts/in-env" python -c 'import sys; open(sys.argv[1], "w").write("from inside\n")' \
  "$home_dir/written.txt" || true
expect "host's $home_dir/written.txt" "$(cat "$home_dir/written.txt" 2>/dev/null)" "from inside"

# --- (b2) Debian's Fashion-MNIST files are readable inside -------------------------------
fashion_mnist=/usr/share/datasets/fashion-mnist
labels=$fashion_mnist/t10k-labels-idx1-ubyte.gz
if [ -r "$labels" ]; then
  say "the Fashion-MNIST files ($fashion_mnist) are readable inside the environment"
  got=$("$repo/scripts/in-env" sh -c 'ls "$1" && cksum <"$2"' sh "$fashion_mnist" "$labels") || true
  expect "listing and reading $fashion_mnist inside" "$got" "$(ls "$fashion_mnist" && cksum <"$labels")"
else
  # in-env installs it when run as root; otherwise it is the user's choice.
  say "skipped: $fashion_mnist is not on this host (sudo apt-get install dataset-fashion-mnist)"
fi

# --- (c) two checkouts, one environment, each its own code -----------------------------
# The clone gets this working tree's in-env and hash inputs, so that it checks the script
# as it is now, committed or not.
git clone --quiet --shared "$repo" "$clone"
cp "$repo/scripts/in-env" "$clone/scripts/in-env"
cp "$repo/requirements.lock" "$repo/requirements.in" "$clone/"

# imported CHECKOUT: which pipeline/__init__.py CHECKOUT's in-env imports, run from a
# directory that is neither checkout (so the working directory cannot pick it); in-env's
# stderr goes to $scratch/stderr.
imported() {
  (cd "$home_dir" && "$1/scripts/in-env" python -c 'import pipeline; print(pipeline.__file__)' \
    2>"$scratch/stderr") || cat "$scratch/stderr" >&2
}
# no_resync WHO: in-env's last stderr shows no build or sync of the environment.
no_resync() {
  if grep -Ei 'installing|building' "$scratch/stderr" >&2; then
    fail "$1 re-synced the shared environment (in-env's stderr above)"
  else
    say "  ok, no re-sync"
  fi
}

say "the first checkout ($repo) imports its own pipeline package"
expect "first checkout imports" "$(imported "$repo")" "$repo/pipeline/__init__.py"

# A process of the first checkout that is running while the second checkout starts, and
# imports (in a subprocess, as TFX and Beam do) only after it: it announces itself in
# $scratch/ready, then waits for a line on the FIFO $scratch/go.
mkfifo "$scratch/go"
(cd "$home_dir" && "$repo/scripts/in-env" python -c '
import subprocess, sys
open(sys.argv[1], "w").close()
open(sys.argv[2]).readline()
subprocess.run([sys.executable, "-c", "import pipeline; print(pipeline.__file__)"], check=True)
' "$scratch/ready" "$scratch/go" >"$scratch/late" 2>&1) &
late=$!
for _ in $(seq 600); do [ -e "$scratch/ready" ] || ! kill -0 "$late" 2>/dev/null && break; sleep 0.1; done

say "a second checkout ($clone) imports its own, without re-syncing the shared environment"
expect "second checkout imports" "$(imported "$clone")" "$clone/pipeline/__init__.py"
no_resync "the second checkout"

say "the first checkout's running process, importing only now, still gets its own code"
# (A writer blocks until the reader opens the FIFO: never for long, even if it died.)
timeout 60 bash -c 'echo go >"$1"' _ "$scratch/go" || true
wait "$late" || true
expect "first checkout's running process imports" "$(cat "$scratch/late")" "$repo/pipeline/__init__.py"

say "the first checkout's next run imports its own, without re-syncing"
expect "first checkout imports, again" "$(imported "$repo")" "$repo/pipeline/__init__.py"
no_resync "the first checkout"

# --- (d) the Python side knows what is shared ------------------------------------------
refuse_root='import sys; from pathlib import Path; from pipeline.host import check_output_root
check_output_root(Path("/"))'
if [ "$("$repo/scripts/in-env" cat /etc/os-release)" = "$(cat /etc/os-release)" ]; then
  say "plain venv (same userland as the host): everything is shared, an output root of / is accepted"
  got=$("$repo/scripts/in-env" sh -c 'printf %s "${TFXP_SHARED_PATHS-unset}"')
  expect "TFXP_SHARED_PATHS" "$got" unset
  "$repo/scripts/in-env" python -c "$refuse_root" && say "  ok" || fail "an output root of / was refused"
else
  say "private userland: pipeline.host refuses an output root of /"
  if got=$("$repo/scripts/in-env" python -c "$refuse_root" 2>&1); then
    fail "an output root of / was accepted"
  elif grep -q "^ValueError: / is outside the directories the environment shares" <<<"$got"; then
    say "  ok"
  else
    fail "an output root of / failed with something else: $got"
  fi

  say "every path in TFXP_SHARED_PATHS is the host's own directory (same device and inode)"
  shared=$("$repo/scripts/in-env" sh -c 'printf %s "${TFXP_SHARED_PATHS-}"')
  if [ -z "$shared" ]; then
    fail "TFXP_SHARED_PATHS is not set inside the private userland"
  else
    IFS=: read -ra dirs <<<"$shared"
    say "  shared: ${dirs[*]}"
    expect "stat of the shared paths inside" \
      "$("$repo/scripts/in-env" stat -L -c '%d:%i %n' "${dirs[@]}")" "$(stat -L -c '%d:%i %n' "${dirs[@]}")"
  fi

  say "TFXP_HOST_ROOT is the host's / and read-only"
  got=$("$repo/scripts/in-env" sh -c 'ls -a "${TFXP_HOST_ROOT:-/nonexistent}"' 2>&1) || true
  expect "ls of TFXP_HOST_ROOT" "$got" "$(ls -a /)"
  got=$("$repo/scripts/in-env" sh -c 'touch "${TFXP_HOST_ROOT:-/nonexistent}$1/via-host-root"' \
    sh "$home_dir" 2>&1) || true
  if [ -e "$home_dir/via-host-root" ]; then
    fail "wrote $home_dir/via-host-root through TFXP_HOST_ROOT"
  elif ! grep -q 'Read-only file system' <<<"$got"; then
    fail "writing through TFXP_HOST_ROOT failed, but not as read-only: $got"
  else
    say "  ok, read-only"
  fi
fi

if [ "$failures" -gt 0 ]; then
  say "$failures check(s) failed"
  exit 1
fi
say "all checks passed"
