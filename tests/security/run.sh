#!/usr/bin/env bash
# The security suite: attacks run inside real sandboxes; each asserts the attack fails and the
# host is unchanged. Runs with pytest on Debian's python3, against the real daemon.
set -u
cd "$(dirname "$0")/../.."
/usr/bin/python3 -m pytest -q -rfEs -p no:cacheprovider tests/security "$@"
rc=$?
[ $rc -eq 5 ] && { echo "security: no tests collected" >&2; exit 1; }
exit $rc
