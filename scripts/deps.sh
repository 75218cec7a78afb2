#!/usr/bin/env bash
# Install every Debian and npm package corral needs. Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(
	build-essential pkg-config clang llvm
	libuv1-dev libnghttp2-dev libprotobuf-c-dev protobuf-c-compiler
	protobuf-compiler protobuf-compiler-grpc libsqlite3-dev sqlite3
	libseccomp-dev libcap-dev libbpf-dev bpftool libnl-3-dev libnl-route-3-dev libarchive-dev
	mmdebstrap busybox-static bubblewrap crun runc iproute2 nftables libnftables-dev
	python3-grpcio python3-protobuf python3-pytest mypy tmux
	python3-setuptools python3-venv python3-pip
)
missing=()
for p in "${APT_PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	echo "deps: installing nodejs"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q nodejs npm || apt-get install -y -q nodejs
fi

# npm packages for the Node interop test and buf lint, kept in tests/node/node_modules.
stamp=tests/node/node_modules/.deps-stamp
if [ ! -f "$stamp" ] || [ tests/node/package.json -nt "$stamp" ]; then
	echo "deps: npm install (tests/node)"
	(cd tests/node && npm install --no-audit --no-fund --loglevel=error)
	touch "$stamp"
fi
