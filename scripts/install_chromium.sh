#!/usr/bin/env bash
# Debian's Chromium for the browser test (Playwright drives it through executable_path=/usr/bin/chromium;
# Playwright's own browser download is never used). Installed with apt-get when missing and when this runs
# as root (CI runs as root with no stdin); otherwise the command to run is printed and the browser test
# skips with that reason.
#
#   scripts/install_chromium.sh
set -euo pipefail

if [[ -x /usr/bin/chromium ]]; then
  exit 0
fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "browser: installing Debian's chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium </dev/null >/dev/null
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  echo "browser: installing Debian's chromium with sudo"
  sudo -n apt-get -o DPkg::Lock::Timeout=600 update -qq
  sudo -n DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium </dev/null >/dev/null
else
  echo "browser: /usr/bin/chromium is missing; install it with: apt-get install chromium" >&2
fi
