# Sourced by the scripts: installs what building and testing need when it is missing, and puts
# the cargo target directory outside the clone so repeated runs on one machine are incremental.

ensure_packages() {
  local need=()
  for pair in "$@"; do
    local cmd=${pair%%:*} pkg=${pair##*:}
    command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  echo "installing ${need[*]} (apt-get)" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
}

# python3 with venv and pip, for peers installed from PyPI (DuckDB in `themis-bench sql`).
ensure_python_venv() {
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 && return 0
  echo "installing python3-venv (apt-get)" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
}

if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  if mkdir -p /var/cache/themisdb-target 2>/dev/null && [ -w /var/cache/themisdb-target ]; then
    export CARGO_TARGET_DIR=/var/cache/themisdb-target
  else
    export CARGO_TARGET_DIR="$HOME/.cache/themisdb-target"
    mkdir -p "$CARGO_TARGET_DIR"
  fi
fi
