# Shared by scripts/package and scripts/test-package (source it, don't run it):
# the Debian architectures sipbridge is packaged for, their Rust targets, and how
# to run each target's binaries on this (amd64) machine.

# Debian architectures built by default (override: SIPBRIDGE_ARCHES="amd64 arm64").
SIPBRIDGE_ALL_ARCHES="amd64 arm64 armhf"

# rust_triple ARCH: the Rust target of a Debian architecture.
rust_triple() {
    case "$1" in
        amd64) echo x86_64-unknown-linux-gnu ;;
        arm64) echo aarch64-unknown-linux-gnu ;;
        armhf) echo armv7-unknown-linux-gnueabihf ;;
        *) echo "unknown Debian architecture: $1" >&2; return 1 ;;
    esac
}

# cross_prefix ARCH: the GNU toolchain prefix (binutils, sysroot under /usr/PREFIX).
cross_prefix() {
    case "$1" in
        amd64) echo x86_64-linux-gnu ;;
        arm64) echo aarch64-linux-gnu ;;
        armhf) echo arm-linux-gnueabihf ;;
    esac
}

# host_triple: the Rust host target of this machine.
host_triple() {
    rustc -vV | sed -n 's/^host: //p'
}

# cargo_target_args ARCH: "--target TRIPLE", or nothing for the host's own target so
# the amd64 build shares target/release with other release builds of the host.
cargo_target_args() {
    local t
    t=$(rust_triple "$1")
    [ "$t" = "$(host_triple)" ] || echo "--target $t"
}

# build_sipbridge ARCH: the daemon's build for ARCH in $(profile), as scripts/package
# packages it (scripts/test-package --prebuild-arm runs the same ahead of time).
build_sipbridge() {
    # shellcheck disable=SC2046 # cargo_target_args is one "--target X" or nothing
    cargo build --profile "$(profile)" --locked --bin sipbridge $(cargo_target_args "$1")
}

# profile: the Cargo profile scripts/package builds ($SIPBRIDGE_PROFILE, default
# release). The test suite builds its arm64/armhf packages with "qemu" (Cargo.toml).
profile() { echo "${SIPBRIDGE_PROFILE:-release}"; }

# release_dir ARCH: where cargo puts that architecture's build in $(profile).
release_dir() {
    local t base=${CARGO_TARGET_DIR:-target} p
    t=$(rust_triple "$1")
    p=$(profile)
    if [ "$t" = "$(host_triple)" ]; then echo "$base/$p"; else echo "$base/$t/$p"; fi
}

# runner ARCH: the command prefix that runs that architecture's binaries here
# (empty for the host; qemu-user with the cross sysroot otherwise; the same as the
# runners in .cargo/config.toml).
runner() {
    if [ "$(rust_triple "$1")" = "$(host_triple)" ]; then return 0; fi
    case "$1" in
        arm64) echo "qemu-aarch64 -L /usr/aarch64-linux-gnu" ;;
        armhf) echo "qemu-arm -L /usr/arm-linux-gnueabihf" ;;
    esac
}

# deb_version: the package version (Cargo version + "-" + revision 1), as cargo-deb
# names it; packaging/changelog must start with the same version.
deb_version() {
    local v
    v=$(cargo pkgid --locked -p sipbridge | sed 's/.*[#@]//')
    [ -n "$v" ] || { echo "cannot read the package version (cargo pkgid)" >&2; return 1; }
    echo "$v-1"
}

# timed NAME CMD...: runs CMD and prints how long it took.
timed() {
    local name=$1 start=$SECONDS
    shift
    "$@"
    echo "    ($name: $(( SECONDS - start ))s)"
}
