#!/usr/bin/env bash
# Warm restart, measured: what a restart costs the upstream and the devices, with and without
# `[server] warm_restart`, same machine, same run.
#
#   bash benches/warm-restart.sh        # about a minute; as root the fence is real nftables
#   NAMES=50000 bash benches/warm-restart.sh
#
# An NSD authoritative server on 127.0.0.1:5400 answers every *.manage.microsoft.com name (TTL
# 3600). dnsfence (the shipped config's settings: denials logged, fence on) caches NAMES distinct
# names (dnsperf, each once), is stopped with SIGTERM and started again; then every device asks
# again (the same names, at 2,000 queries a second, within the first 10 s after the start). Per
# mode it reports: the upstream queries dnsfence sent in those 10 s (dnsfence_upstream_requests_
# total; target near 0 warm, NAMES cold), the answers' average and p99 latency, the time from
# SIGTERM to exit (the state is written then), from start to the first answer (read then), and the
# state file's size. Everything is on loopback (and, as root, a network namespace it creates)
# and stops by itself. Needs: dnsperf nsd curl dig (Debian packages; dig is in bind9-dnsutils).
set -euo pipefail
cd "$(dirname "$0")/.."
NAMES=${NAMES:-10000}
for tool in dnsperf nsd curl dig; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install dnsperf nsd curl bind9-dnsutils"; exit 1; }
done
cargo build --release --quiet
BIN=$PWD/target/release/dnsfence
W=$(mktemp -d)
pids=()
netns=
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -z "$netns" ] || ip netns del "$netns" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

seq 1 "$NAMES" | sed 's/^/d/; s/$/.manage.microsoft.com A/' > "$W/names.q"
cat > "$W/mms.zone" <<'EOF'
$TTL 3600
manage.microsoft.com. IN SOA ns.bench. hostmaster.bench. 1 3600 600 86400 300
manage.microsoft.com. IN NS ns.bench.
*.manage.microsoft.com. IN A 198.19.0.1
EOF
cat > "$W/nsd.conf" <<EOF
server:
  ip-address: 127.0.0.1@5400
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "$W"
  pidfile: "$W/nsd.pid"
  zonelistfile: "$W/zone.list"
  xfrdfile: "$W/xfrd.state"
  database: ""
  rrl-ratelimit: 0
  verbosity: 0
remote-control:
  control-enable: no
zone:
  name: "manage.microsoft.com"
  zonefile: "mms.zone"
EOF
nsd -d -c "$W/nsd.conf" 2> "$W/nsd.log" &
pids+=($!)

fence='[fence]
enabled = true
backend = "list"'
fence_kind="list backend (not root: no kernel sets)"
if [ "$(id -u)" = 0 ] && command -v nft >/dev/null && command -v ip >/dev/null; then
  netns="dnsfence-warm-$$"
  ip netns add "$netns"
  fence="[fence]
enabled = true
netns = \"$netns\""
  fence_kind="nftables in netns $netns"
fi

config() { # warm_restart
cat <<EOF
[server]
listen = ["127.0.0.1:5410"]
warm_restart = $1
state_dir = "$W/state"
[zones]
dir = "$PWD/zones"
[upstream]
servers = ["127.0.0.1:5400"]
cache_size = $((NAMES * 2))
[query_log]
level = "denied"
path = "$W/queries.jsonl"
[http]
listen = "127.0.0.1:5419"
$fence
[[view]]
name = "bench"
networks = ["127.0.0.0/8"]
profiles = ["intune-core"]
EOF
}

now_ms() { date +%s%3N; }
upstream_requests() {
  curl -s 127.0.0.1:5419/metrics | awk '/^dnsfence_upstream_requests_total/ { s += $2 } END { print s + 0 }'
}
start() { # log; sets pid and START_MS (no subshell: the server is this shell's child)
  local t0 t1
  t0=$(now_ms)
  "$BIN" run -c "$W/dnsfence.toml" 2> "$1" &
  pid=$!
  pids+=("$pid")
  until dig +short +tries=1 +time=1 -p 5410 @127.0.0.1 ready.manage.microsoft.com >/dev/null 2>&1 \
      && curl -sf 127.0.0.1:5419/healthz >/dev/null; do
    sleep 0.02
  done
  t1=$(now_ms)
  START_MS=$((t1 - t0))
}
stop() { # sets STOP_MS
  local t0 t1
  t0=$(now_ms)
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  t1=$(now_ms)
  STOP_MS=$((t1 - t0))
}

echo "warm restart, $NAMES names cached; fence: $fence_kind"
printf '%-6s %14s %10s %10s %12s %13s %12s\n' mode "upstream q/10s" "avg ms" "p99 ms" "stop ms" "start ms" "state KiB"
for mode in warm cold; do
  rm -rf "$W/state"; mkdir -p "$W/state"
  config "$([ "$mode" = warm ] && echo true || echo false)" > "$W/dnsfence.toml"
  start "$W/first-$mode.log"
  dnsperf -s 127.0.0.1 -p 5410 -d "$W/names.q" -n 1 -q 200 -Q 20000 > "$W/fill-$mode.txt" 2>&1
  stop
  stop_ms=$STOP_MS
  size=$(( $(stat -c %s "$W/state/warm-restart.state" 2>/dev/null || echo 0) / 1024 ))
  start "$W/second-$mode.log"
  start_ms=$START_MS
  before=$(upstream_requests)
  # Every device asks again: the same names, 2,000 a second, within the first 10 s.
  dnsperf -s 127.0.0.1 -p 5410 -d "$W/names.q" -n 1 -Q 2000 -l 10 -c 8 -T 1 -v 2>/dev/null \
    | awk '/^> / {print $NF}' | sort -g > "$W/again-$mode.lat" || true
  after=$(upstream_requests)
  read -r avg p99 < <(awk '{a[NR]=$1; s+=$1} END {if (NR==0) {print "- -"; exit}
    printf "%.2f %.2f\n", s/NR*1e3, a[int(NR*0.99)]*1e3}' "$W/again-$mode.lat")
  stop
  printf '%-6s %14s %10s %10s %12s %13s %12s\n' "$mode" "$((after - before))" "$avg" "$p99" "$stop_ms" "$start_ms" "$size"
done
