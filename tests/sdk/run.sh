#!/usr/bin/env bash
# The Python SDK suite: pytest against a real corrald (sync + asyncio API, reliability, CLI,
# examples), then mypy over the package. Usage: tests/sdk/run.sh [pytest args...]
set -u
cd "$(dirname "$0")/../.."
[ -f sdk/python/corral/v1/.stamp ] || make -s sdk-stubs || exit 1
timeout --foreground 1800 /usr/bin/python3 -m pytest -q -p no:cacheprovider -rs tests/sdk "$@"
rc=$?
case $rc in
	5) echo "sdk: no tests collected" >&2; rc=1 ;;
	124) echo "sdk: timed out after 1800 s" >&2 ;;
esac
echo "sdk: mypy sdk/python/corral"
mypy --config-file sdk/python/pyproject.toml --cache-dir build/.mypy_cache sdk/python/corral || rc=1
exit $rc
