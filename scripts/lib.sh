# Shared shell helpers for scripts/*: idempotent installs. Source it, don't run it.

# apt_install PKG...: installs the Debian packages that are missing (apt-get update once).
apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "==> apt-get install ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# step NAME: prints a section header with the time since the script started.
step() {
    echo
    echo "==> [$(( SECONDS ))s] $*"
}
