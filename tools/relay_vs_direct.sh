#!/usr/bin/env bash
# relay_vs_direct.sh -- end-to-end throughput of relay in one run, as a ratio:
#
#   direct: smtp-source --SMTP--> smtp-sink
#   relay:  smtp-source --SMTP--> relay serve (250 after fsync) --SMTP--> smtp-sink
#
# Reports the rate at which smtp-sink counted all N messages in each case
# and relay/direct. Everything listens on 127.0.0.0/8. Needs smtp-source and
# smtp-sink (Debian package postfix). Usage (from the repository root):
#   N=20000 SESSIONS=20 SIZE=1024 tools/relay_vs_direct.sh
# RELAY_BIN=path runs that binary instead of building ./cmd/relay (to
# compare two builds); PROFILE and MEMPROFILE name CPU and heap profiles;
# CONC sets per_hop_concurrency; DRAIN_WATCH=S watches the spool shrink for S
# seconds after the run.
set -euo pipefail
N=${N:-20000} SESSIONS=${SESSIONS:-20} SIZE=${SIZE:-1024} RCPTS=${RCPTS:-1}
RELAY=127.0.0.2:2525 SINK=127.0.0.9:2626
BASE=$(mktemp -d /tmp/relaybench.XXXXXX)
SRC=/usr/sbin/smtp-source SINKBIN=/usr/sbin/smtp-sink
[ -x $SRC ] && [ -x $SINKBIN ] || { echo "smtp-source/smtp-sink missing: apt-get install postfix" >&2; exit 2; }
if [ -n "${RELAY_BIN:-}" ]; then cp "$RELAY_BIN" "$BASE/relay"; else go build -o "$BASE/relay" ./cmd/relay; fi
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$BASE"; }
trap cleanup EXIT

sink_count() { local s; s=$(tail -c 200 "$1" 2>/dev/null | tr '\r' '\n' | grep -o 'mesg=[0-9]*' | tail -1); echo "${s#mesg=}"; }
now() { date +%s.%N; }
start_sink() { : > "$1"; $SINKBIN -c -u nobody $SINK 1000 > "$1" 2>/dev/null & pids+=($!); sleep 0.5; }
# cpu_ms PID: user+sys of a live process so far, in milliseconds.
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)*1000/hz}' "/proc/$1/stat"; }
# source ARGS...: smtp-source, its user+sys in ms left in $BASE/source.cpu.
source() {
	if [ -x /usr/bin/time ]; then
		/usr/bin/time -f '%U %S' -o "$BASE/source.time" $SRC "$@"
		awk '{print ($1+$2)*1000}' "$BASE/source.time" > "$BASE/source.cpu"
	else
		$SRC "$@"; echo 0 > "$BASE/source.cpu"
	fi
}
stop_sink() { kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }
wait_sink() { # file count timeout -> prints seconds since $T0
	local deadline=$(( $(date +%s) + $3 ))
	while [ "$(sink_count "$1")" != "$2" ]; do
		[ "$(date +%s)" -lt $deadline ] || { echo "timeout: sink has $(sink_count "$1") of $2" >&2; return 1; }
		sleep 0.02
	done
}

# direct
start_sink "$BASE/direct.out"
T0=$(now); source -s "$SESSIONS" -l "$SIZE" -r "$RCPTS" -m "$N" -f a@src.test -t u@sink.test $SINK; wait_sink "$BASE/direct.out" $((N)) 300
direct=$(echo "$(now) - $T0" | bc)
# The floor: what receiving and sending one message costs smtp-sink and
# smtp-source, the two halves of the relay's job.
floor=$(echo "$(cat "$BASE/source.cpu") + $(cpu_ms "${pids[-1]}")" | bc -l); stop_sink

# relay
cat > "$BASE/relay.toml" <<TOML
hostname = "relay.test"
data_dir = "$BASE/data"
local_domains = ["relay.test"]
[smtp]
listen = ["$RELAY"]
[pop3]
listen = []
[admin]
socket = ""
[queue]
per_hop_concurrency = ${CONC:-20}
[[route]]
domain = "sink.test"
to = "$SINK"
tls = "none"
TOML
start_sink "$BASE/relay.out"
"$BASE/relay" serve --config "$BASE/relay.toml" --log-level warn ${PROFILE:+--cpuprofile $PROFILE} ${MEMPROFILE:+--memprofile $MEMPROFILE} 2> "$BASE/relay.log" & rpid=$!; pids+=($rpid)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.2/2525) 2>/dev/null && break; sleep 0.05; done
spool_kib() { du -sk "$BASE/data" | cut -f1; }
idle=$(spool_kib)
T0=$(now); source -s "$SESSIONS" -l "$SIZE" -r "$RCPTS" -m "$N" -f a@src.test -t u@sink.test $RELAY; accept=$(echo "$(now) - $T0" | bc)
wait_sink "$BASE/relay.out" $((N)) 600
e2e=$(echo "$(now) - $T0" | bc)
rss=$(awk '/VmHWM/{print $2/1024 " MiB"}' /proc/$rpid/status)
# user+sys of the relay process over the run, in clock ticks (fields 14, 15).
cpu=$(cpu_ms $rpid)
printf 'N=%d size=%d sessions=%d rcpts=%d\n' "$N" "$SIZE" "$SESSIONS" "$RCPTS"
printf 'direct  source->sink        %7.2fs  %7.0f msg/s\n' "$direct" "$(echo "$N / $direct" | bc -l)"
printf 'relay   accepted (250 each) %7.2fs  %7.0f msg/s\n' "$accept" "$(echo "$N / $accept" | bc -l)"
printf 'relay   end to end          %7.2fs  %7.0f msg/s   peak RSS %s\n' "$e2e" "$(echo "$N / $e2e" | bc -l)" "$rss"
printf 'relay   CPU per message     %7.3f ms   (smtp-source + smtp-sink, direct: %.3f ms, relay/that %.2f)\n' \
	"$(echo "$cpu / $N" | bc -l)" "$(echo "$floor / $N" | bc -l)" "$(echo "$cpu / $floor" | bc -l)"
printf 'ratio   relay e2e / direct   %.2f\n' "$(echo "$direct / $e2e" | bc -l)"
# DRAIN_WATCH=S: the spool's size on disk every 10 s for S seconds after
# the last message reached the sink, against its size when idle at start
# (disk use must follow the queue), with the relay's VmRSS.
if [ -n "${DRAIN_WATCH:-}" ]; then
	for t in $(seq 0 10 "$DRAIN_WATCH"); do
		[ "$t" = 0 ] || sleep 10
		printf 'drain   +%3ds spool %6d KiB (idle %d KiB, %.2fx)  VmRSS %s\n' "$t" "$(spool_kib)" "$idle" \
			"$(echo "$(spool_kib) / $idle" | bc -l)" "$(awk '/VmRSS/{r=$2} /RssAnon/{a=$2} END{printf "%.1f MiB, RssAnon %.1f MiB", r/1024, a/1024}' /proc/$rpid/status)"
	done
fi
