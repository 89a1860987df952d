#!/usr/bin/env bash
# pg.sh: a throwaway local PostgreSQL cluster for `make run`, `make test` and
# `make bench`, so nobody has to set one up by hand.
#
#   scripts/pg.sh start   start (or reuse) the cluster and print its URL
#   scripts/pg.sh url     print the URL of the running cluster
#   scripts/pg.sh stop    stop it (the data stays in var/pg for next time)
#
# With DATABASE_URL set, `start` and `url` print it and touch nothing: an
# operator's own database always wins. The cluster lives in ./var/pg (override
# with ROSTER_PG_DIR), listens on 127.0.0.1 only, on the first free port from
# 55432, and trusts local connections: it is for development and tests only.
set -euo pipefail

dir=${ROSTER_PG_DIR:-$PWD/var/pg}
data=$dir/data
log=$dir/server.log
portfile=$dir/port

die() { echo "pg.sh: $*" >&2; exit 1; }

find_bin() {
	local b
	for b in /usr/lib/postgresql/*/bin; do
		[ -x "$b/initdb" ] && { echo "$b"; return; }
	done
	command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return; }
	die "PostgreSQL server binaries not found: install them (Debian: apt-get install -y postgresql) or set DATABASE_URL to an existing database."
}

# as_owner runs a server binary as the postgres OS user when we are root,
# because initdb and postgres refuse to run as root.
as_owner() {
	if [ "$(id -u)" = 0 ]; then
		id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' OS user to own the cluster (apt-get install -y postgresql creates it)."
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

url() { echo "postgres://postgres@127.0.0.1:$(cat "$portfile")/roster?sslmode=disable"; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

running() { [ -f "$portfile" ] && [ -f "$data/postmaster.pid" ] && "$bin/pg_isready" -q -h 127.0.0.1 -p "$(cat "$portfile")"; }

cmd=${1:-start}
if [ -n "${DATABASE_URL:-}" ] && [ "$cmd" != stop ]; then echo "$DATABASE_URL"; exit 0; fi
bin=$(find_bin)

case "$cmd" in
start)
	if running; then url; exit 0; fi
	mkdir -p "$dir"
	[ "$(id -u)" = 0 ] && chown postgres "$dir"
	if [ ! -f "$data/PG_VERSION" ]; then
		as_owner "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
			die "initdb failed; see $dir/initdb.log"
	fi
	# The first port from 55432 that nothing listens on. That is no
	# promise the server can bind it: 55432 is inside Linux's ephemeral
	# range (32768-60999), so a client connection (the test suite opens
	# thousands, to the main cluster) may hold it as its local port, and
	# the server then fails with "Address already in use". That case moves
	# on to the next port; any other failure stops here.
	port=55432
	started=
	while [ "$port" -lt 55532 ]; do
		if port_free "$port"; then
			echo "$port" >"$portfile"
			before=$(stat -c %s "$log" 2>/dev/null || echo 0)
			# Tuned for throwaway test data: durability off is fine here and
			# makes the suite fast; never copy these settings to production.
			if as_owner "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 start -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c shared_buffers=256MB" >/dev/null 2>&1; then
				started=1
				break
			fi
			tail -c +"$((before + 1))" "$log" | grep -q "could not bind" || die "the server did not start; see $log"
		fi
		port=$((port + 1))
	done
	[ -n "$started" ] || die "no port in 55432-55531 the server could bind; see $log"
	for _ in $(seq 1 60); do "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break; sleep 0.5; done
	"$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='roster'" | grep -q 1 ||
		"$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qc "CREATE DATABASE roster" >/dev/null
	url
	;;
url)
	running || die "no local cluster is running: run 'make db' first"
	url
	;;
stop)
	[ -f "$data/postmaster.pid" ] && as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
	exit 0
	;;
*) die "usage: pg.sh start|url|stop" ;;
esac
