#!/usr/bin/env bash
# Node interop test (grpc-js) against a real build/corrald. Exit status: the test's.
set -u
cd "$(dirname "$0")/../.."
if [ ! -d tests/node/node_modules/@grpc/grpc-js ] || [ ! -d tests/node/node_modules/@grpc/proto-loader ]; then
	echo "node: @grpc/grpc-js or @grpc/proto-loader missing in tests/node/node_modules: run make deps" >&2
	echo "node: 0 passed, 1 failed"
	exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "node: skipped: corrald needs root here (namespaces, cgroups)"
	exit 0
fi
exec timeout --foreground 600 node tests/node/test.js
