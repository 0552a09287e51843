#!/usr/bin/env bash
# Makes sure the PostgreSQL the tests use answers on 127.0.0.1:5432
# (trust auth, user postgres, database test), starting the machine's cluster
# when it is down.
set -euo pipefail
ready() { pg_isready -q -h 127.0.0.1 -p 5432 -U postgres 2>/dev/null; }
if ready; then exit 0; fi
if ! command -v pg_ctlcluster >/dev/null; then
	echo "postgres: not running on 127.0.0.1:5432 and pg_ctlcluster is not installed (apt-get install postgresql)" >&2
	exit 1
fi
version="$(ls /etc/postgresql | sort -V | tail -n 1)"
echo "postgres: starting cluster $version/main" >&2
pg_ctlcluster --skip-systemctl-redirect "$version" main start
for _ in $(seq 1 50); do
	ready && exit 0
	sleep 0.2
done
echo "postgres: no answer on 127.0.0.1:5432 after 10s" >&2
exit 1
