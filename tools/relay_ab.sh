#!/usr/bin/env bash
# relay_ab.sh -- compare two relay builds on a noisy machine: alternating
# runs of tools/relay_vs_direct.sh (A, B, A, B, ...), each run's direct and
# relay end-to-end rates, then the mean end-to-end rate of each build and
# their ratio. Usage (from the repository root):
#   go build -o /tmp/relay-a ./cmd/relay   # before the change
#   go build -o /tmp/relay-b ./cmd/relay   # after it
#   tools/relay_ab.sh /tmp/relay-a /tmp/relay-b 5
# N, SESSIONS, SIZE and CONC pass through to relay_vs_direct.sh.
set -euo pipefail
A=$1 B=$2 ROUNDS=${3:-4}
cd "$(dirname "$0")/.."
for _ in $(seq "$ROUNDS"); do
	for x in A B; do
		out=$(RELAY_BIN=${!x} N=${N:-20000} tools/relay_vs_direct.sh 2>&1)
		d=$(echo "$out" | awk '/^direct/{print $(NF-1)}')
		e=$(echo "$out" | awk '/end to end/{print $(NF-5)}')
		c=$(echo "$out" | awk '/CPU per message/{print $5}')
		[ -n "$d" ] && [ -n "$e" ] || { echo "$out" >&2; exit 1; }
		echo "$x direct=$d e2e=$e ratio=$(echo "scale=3; $e/$d" | bc) cpu_ms=$c"
	done
done | awk '{print} /^A/{split($3,a,"=");sa+=a[2];na++} /^B/{split($3,b,"=");sb+=b[2];nb++}
	/^A/{split($5,c,"=");ca+=c[2]} /^B/{split($5,c,"=");cb+=c[2]}
	END{printf "A mean e2e %.0f  B mean e2e %.0f  B/A %.3f\n", sa/na, sb/nb, (sb/nb)/(sa/na)
	printf "A CPU ms/msg %.3f  B CPU ms/msg %.3f  B/A %.3f\n", ca/na, cb/nb, (cb/nb)/(ca/na)}'
