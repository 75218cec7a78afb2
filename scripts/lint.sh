#!/usr/bin/env bash
# buf lint (STANDARD rules) on api/, and a check for banned C calls.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/node/node_modules/.bin/buf lint
banned='\b(sprintf|strcpy|strcat|strtok|atoi|system|gets)\s*\('
if git ls-files '*.c' '*.h' | xargs grep -nE "$banned" | grep -v 'lint: allow'; then
	echo "lint: banned call(s) above (use snprintf, memcpy with bounds, strtol, …)" >&2
	exit 1
fi
echo "lint: ok"
