#!/usr/bin/env bash
# Prints the path of the default model (stories260K, llama2.c format) and makes sure it is there.
#
#   $SQUEEZE_MODELS  where models are kept (default ~/.cache/squeeze/models); the default model
#                    lives in $SQUEEZE_MODELS/stories260K/ as stories260K.bin + tok512.bin
#   $SQUEEZE_SHARED  the shared data folder (default ../shared beside the repository), copied from
#                    when it has the model
#
# Otherwise the two files are downloaded from Hugging Face. Only the .bin path goes to stdout, so
# that `squeeze run -m "$(scripts/default_model.sh)"` works; progress goes to stderr.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
models_dir=${SQUEEZE_MODELS:-${HOME:-~}/.cache/squeeze/models}
shared_dir=${SQUEEZE_SHARED:-$repo_root/../shared}
[[ -d "$shared_dir" ]] && shared_dir=$(cd "$shared_dir" && pwd)
name=stories260K
files=(stories260K.bin tok512.bin)
url_base=https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K

target="$models_dir/$name"
say() { echo "default_model.sh: $*" >&2; }

have_all() {
  local dir=$1 f
  for f in "${files[@]}"; do
    [[ -s "$dir/$f" ]] || return 1
  done
}

if have_all "$target"; then
  echo "$target/${files[0]}"
  exit 0
fi

if ! mkdir -p "$target" 2>/dev/null; then
  say "cannot create the model directory $target (set SQUEEZE_MODELS to a writable directory)"
  exit 1
fi

# Temporary names live beside the targets so that the final rename is atomic; an interrupted copy
# or download never leaves a truncated file under the real name.
tmp_files=()
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() { ((${#tmp_files[@]} == 0)) || rm -f "${tmp_files[@]}"; }
trap cleanup EXIT

install_from_dir() {
  local src=$1 f tmp
  for f in "${files[@]}"; do
    [[ -s "$target/$f" ]] && continue
    tmp=$(mktemp "$target/.$f.XXXXXX")
    tmp_files+=("$tmp")
    # mktemp creates files readable only by their owner; a model is not a secret.
    cp "$src/$f" "$tmp" && chmod 644 "$tmp" && mv -f "$tmp" "$target/$f" || return 1
  done
}

download() {
  local f tmp
  command -v curl >/dev/null 2>&1 || { say "curl is not installed (run scripts/setup.sh)"; return 1; }
  for f in "${files[@]}"; do
    [[ -s "$target/$f" ]] && continue
    tmp=$(mktemp "$target/.$f.XXXXXX")
    tmp_files+=("$tmp")
    say "downloading $url_base/$f"
    curl --fail --location --silent --show-error --retry 2 --connect-timeout 15 \
      --output "$tmp" "$url_base/$f" || return 1
    [[ -s "$tmp" ]] || { say "downloaded $f is empty"; return 1; }
    chmod 644 "$tmp" && mv -f "$tmp" "$target/$f" || return 1
  done
}

shared_model="$shared_dir/models/$name"
if have_all "$shared_model"; then
  say "copying $name from $shared_model to $target"
  if install_from_dir "$shared_model"; then
    echo "$target/${files[0]}"
    exit 0
  fi
  say "copy from $shared_model failed; trying a download"
fi

if download; then
  echo "$target/${files[0]}"
  exit 0
fi

cat >&2 <<MSG
default_model.sh: cannot find or fetch the default model ($name: ${files[*]}).
  looked in:  $target  (SQUEEZE_MODELS)
              $shared_model  (SQUEEZE_SHARED)
  download:   $url_base/{${files[0]},${files[1]}} failed
To fix it, do one of:
  - put ${files[*]} into $target/
  - point SQUEEZE_SHARED at a shared data folder that has models/$name/
  - run again where huggingface.co can be reached
MSG
exit 1
