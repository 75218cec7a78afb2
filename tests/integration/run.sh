#!/usr/bin/env bash
# Integration tests: a real build/corrald driven through the generated Python stubs.
# Usage: tests/integration/run.sh [pytest args...]   (e.g. -m 'not slow', -k restart, -x)
set -u
cd "$(dirname "$0")/../.."
[ -f build/py/corral/v1/sandbox_pb2.py ] || make -s py-stubs || exit 1
# Debian's interpreter: the python3 first on PATH does not see python3-grpcio.
timeout --foreground 3600 /usr/bin/python3 -m pytest -q -p no:cacheprovider -rs tests/integration "$@"
rc=$?
case $rc in
	0) ;;
	5) echo "integration: no tests collected" >&2; rc=1 ;;
	124) echo "integration: timed out after 3600 s" >&2 ;;
esac
exit $rc
