#!/usr/bin/env bash
# Headless Chromium for the console's browser tests (console/browser_test.go).
#
#   scripts/chromium.sh install   apt-get install chromium when /usr/bin/chromium is missing
#   scripts/chromium.sh path      print the binary the tests start (EDA_CHROMIUM overrides it)
#
# Debian's package; the tests drive it with chromedp (CDP over a pipe), headless.
set -euo pipefail

bin="${EDA_CHROMIUM:-/usr/bin/chromium}"

install() {
	if [[ -x "$bin" ]]; then
		return
	fi
	echo "chromium: installing Debian's chromium (apt-get)" >&2
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y --no-install-recommends chromium >&2; then
		apt-get update >&2
		apt-get install -y --no-install-recommends chromium >&2
	fi
	if [[ ! -x "$bin" ]]; then
		echo "chromium: installed, but $bin is missing" >&2
		exit 1
	fi
}

case "${1:-}" in
install) install ;;
path) echo "$bin" ;;
*)
	echo "usage: $0 install|path" >&2
	exit 2
	;;
esac
