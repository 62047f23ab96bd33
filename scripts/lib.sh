# Shared by the scripts: install what the build needs, from Debian's packages.
# shellcheck shell=bash

# ensure_packages PKG... : apt-get install the missing ones (root, or sudo when available).
ensure_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The packages libcurl's system-library target builds against.
BUILD_PACKAGES=(libcurl4-openssl-dev libssl-dev libsqlite3-dev pkg-config)
