#!/usr/bin/env bash
# Build KenLM's lmplz and build_binary (the programs that estimate and compile n-gram models) from the
# kenlm source distribution on PyPI, once per machine, into a cache directory:
#
#   scripts/build_kenlm.sh DEST_BIN_DIR VERSION PYTHON
#
# Boost, zlib, bzip2 and xz come from Debian packages (installed with apt-get when missing and when this
# runs as root; otherwise the missing package names are printed). The build happens in a temporary
# directory and the binaries are moved into DEST_BIN_DIR only when both built, so an interrupted build
# leaves nothing behind that looks finished.
set -euo pipefail

dest=${1:?destination bin directory}
version=${2:?kenlm version}
python=${3:?python with pip}

if [[ -x "$dest/lmplz" && -x "$dest/build_binary" ]]; then
  exit 0
fi

debs=(build-essential cmake libboost-program-options-dev libboost-system-dev libboost-thread-dev
      libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev)
missing=()
for pkg in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# Another apt-get (a CI image's own updates, a second setup step) may hold the dpkg lock: wait for it.
apt_wait() {
  local i
  for i in $(seq 1 60); do
    "$@" -o DPkg::Lock::Timeout=600 && return 0
    echo "kenlm: '$*' failed (attempt $i); retrying in 10 s" >&2
    sleep 10
  done
  return 1
}
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "kenlm: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt_wait apt-get update -qq
    apt_wait apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    echo "kenlm: installing Debian packages with sudo: ${missing[*]}"
    apt_wait sudo -n apt-get update -qq
    apt_wait sudo -n DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "kenlm: missing Debian packages: ${missing[*]}" >&2
    echo "kenlm: install them (apt-get install ${missing[*]}) and run 'make kenlm' again" >&2
    exit 1
  fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/lm_platform-kenlm.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "kenlm: building lmplz and build_binary from the kenlm $version source distribution (about a minute)"
# The sdist alone: no build isolation (it would compile cmake from source under --no-binary).
"$python" -m pip download -q --no-deps --no-binary kenlm --no-build-isolation "kenlm==$version" -d "$work" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
tar -xzf "$work/kenlm-$version.tar.gz" -C "$work"
cmake -S "$work/kenlm-$version" -B "$work/build" -DCMAKE_BUILD_TYPE=Release >"$work/cmake.log" 2>&1 \
  || { cat "$work/cmake.log" >&2; exit 1; }
cmake --build "$work/build" --target lmplz build_binary -j "$(nproc)" >"$work/make.log" 2>&1 \
  || { tail -50 "$work/make.log" >&2; exit 1; }
mkdir -p "$dest"
staged=$(mktemp -d "$dest/.tmp-XXXXXX")
cp "$work/build/bin/lmplz" "$work/build/bin/build_binary" "$staged/"
mv "$staged/build_binary" "$dest/build_binary"
mv "$staged/lmplz" "$dest/lmplz"
rmdir "$staged"
echo "kenlm: $dest/lmplz, $dest/build_binary"
