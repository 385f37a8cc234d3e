#!/usr/bin/env bash
# dnsperf harness: dnsfence against dnsmasq and Unbound, same machine, same run, same queries.
#
#   bash benches/dnsperf.sh            # about 8 minutes; run as root for the nftables fence
#   SECONDS_PER_RUN=10 ROUNDS=5 LAT_ROUNDS=7 bash benches/dnsperf.sh
#   MAIN=0 bash benches/dnsperf.sh     # only the miss path (cold cache, 10 ms upstream, overload)
#   MISS_ROUNDS=3: rounds of the cold-cache scenario (default 2; the best of them is reported)
#   BASE_BIN=/path/to/older/dnsfence bash benches/dnsperf.sh   # adds a "dnsfence-base" row (and "base" to the miss path)
#   METRICS_OUT=FILE: dnsfence's /metrics after the 10 ms scenario, for its upstream counters
#     (BASE_ZONES=/path/to/its/zones when the older build cannot read today's zone files)
#
# An NSD authoritative server on 127.0.0.1:5300 serves every catalog name (a root zone, so one
# zone covers them all, response-rate limiting off). dnsfence (as shipped, and with
# busy_poll_us = 200: "dnsfence-bp"), dnsmasq, Unbound and "hickory" (examples/hickory_peer.rs:
# hickory-server with its forwarder, behind the same allowlist) run as caching forwarders to it,
# each pinned to CPU 0; dnsperf runs pinned to CPU 1. Each cache is warmed, then measured with three
# query files: 100 cached allowed names, 100 denied names, and an 80/20 mix, in interleaved
# rounds (median reported: this shared machine is noisy); then fixed-rate runs (20k qps, -v,
# interleaved rounds, median) give p50/p99. Server CPU per 100k answers comes from
# /proc/PID/stat, peak RSS from /proc/PID/status after 100k distinct names. "lost" counts
# queries that got no answer over all throughput runs (a full socket buffer drops them).
# dnsfence alone also takes a denial flood of 300k distinct random names.
# Everything is on loopback and stops by itself.
# Needs: dnsperf nsd dnsmasq unbound (Debian packages), taskset and chrt (util-linux).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${SECONDS_PER_RUN:-5}
ROUNDS=${ROUNDS:-3}
FIXED_QPS=${FIXED_QPS:-20000}
MISSES=${MISSES:-60000}
MISS_ROUNDS=${MISS_ROUNDS:-2}
for tool in dnsperf nsd dnsmasq unbound taskset chrt; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install dnsperf nsd dnsmasq unbound util-linux"; exit 1; }
done

cargo build --release --quiet --bin dnsfence --example hickory_peer
BIN=$PWD/target/release/dnsfence
HICKORY=$PWD/target/release/examples/hickory_peer
W=$(mktemp -d)
pids=()
netns=
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$netns" ]; then
    ip netns del "$netns" 2>/dev/null || true
    ip netns del "$netns-bp" 2>/dev/null || true
    ip netns del "$netns-base" 2>/dev/null || true
    ip netns del "$netns-nolog" 2>/dev/null || true
    ip netns del "$netns-cold" 2>/dev/null || true
    ip netns del dnsfence-up10 2>/dev/null || true
  fi
  [ -n "${nftset_table:-}" ] && nft delete table inet "$nftset_table" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

# ---- query files -------------------------------------------------------------------------
# Exact catalog names (no wildcard), plus one name under each "*." pattern, first 100.
grep -ho '"[A-Za-z0-9*.-]*\.[a-z]*"' zones/*.toml | tr -d '"' | grep -v '^[0-9]' | tr 'A-Z' 'a-z' \
  | sed -e 's/^\*\./bench./' -e 's/\*/x/' | sort -u | sed -n 1,100p > "$W/allowed.names"
for i in $(seq 1 100); do echo "www.denied$i.example.net"; done > "$W/denied.names"
sed 's/$/ A/' "$W/allowed.names" > "$W/allowed.q"
sed 's/$/ A/' "$W/denied.names" > "$W/denied.q"
{ head -80 "$W/allowed.q"; head -20 "$W/denied.q"; } > "$W/mix.q"
# 100k distinct allowed names for the memory measurement.
seq 1 100000 | sed 's/^/n/; s/$/.manage.microsoft.com A/' > "$W/fill.q"
# A denial flood of 300k distinct random names (a tunnel or DGA): dnsfence only, since the peers
# would forward every one of them upstream.
od -An -tx8 -N 2400000 /dev/urandom | tr -s ' ' '\n' | grep . | sed 's/$/.dga.example.net A/' > "$W/flood.q"

# ---- upstream: NSD serving a root zone with every name -----------------------------------
{
  echo '$TTL 3600'
  echo '. IN SOA ns.bench. hostmaster.bench. 1 3600 600 86400 300'
  echo '. IN NS ns.bench.'
  echo 'ns.bench. IN A 127.0.0.1'
  i=0
  while read -r n; do i=$((i + 1)); echo "$n. IN A 198.18.$((i / 250)).$((i % 250 + 1))"; done < "$W/allowed.names"
  echo '*.manage.microsoft.com. IN A 198.19.0.1'
  # The miss path's names, each with an address of its own, so that every miss of dnsfence
  # (and of dnsmasq --nftset) writes a new element to the kernel; the 10 ms and overload
  # scenarios' names fall to the wildcard.
  awk -v rounds="$MISS_ROUNDS" -v misses="$MISSES" 'function a(name) {
      i++; printf "%s.manage.microsoft.com. IN A 10.%d.%d.%d\n", name, int(i / 65536) % 256, int(i / 256) % 256, i % 256
    }
    BEGIN { for (r = 1; r <= rounds; r++) { for (k = 1; k <= misses; k++) a("m" r "-" k); for (k = 1; k <= 10000; k++) a("f" r "-" k) } }'
} > "$W/root.zone"
cat > "$W/nsd.conf" <<EOF
server:
  ip-address: 127.0.0.1@5300
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
  hide-version: yes
remote-control:
  control-enable: no
zone:
  name: "."
  zonefile: "root.zone"
EOF
taskset -c 1 nsd -d -c "$W/nsd.conf" 2> "$W/nsd.log" &
pids+=($!)
echo "m1-1.manage.microsoft.com A" > "$W/nsd-up.q"
for _ in $(seq 1 100); do
  dnsperf -s 127.0.0.1 -p 5300 -d "$W/nsd-up.q" -n 1 -t 1 2>/dev/null | grep -q 'Queries completed: *1 ' && break
  sleep 0.2
done

# ---- the servers under test --------------------------------------------------------------
fence_section='[fence]
enabled = true
backend = "list"'
if [ "$(id -u)" = 0 ] && command -v nft >/dev/null && command -v ip >/dev/null; then
  netns="dnsfence-perf-$$"
  ip netns add "$netns"
  ip netns add "$netns-bp"
  ip netns add "$netns-base"
  ip netns add "$netns-nolog"
  fence_section="[fence]
enabled = true
netns = \"$netns\""
fi
dnsfence_config() { # port http-port busy_poll_us netns query-log-level [upstream]
cat <<EOF
[server]
listen = ["127.0.0.1:$1"]
busy_poll_us = $3
[zones]
dir = "$PWD/zones"
[upstream]
servers = ["${6:-127.0.0.1:5300}"]
cache_size = 200000
[query_log]
level = "$5"
path = "$W/queries-$1.jsonl"
[http]
listen = "127.0.0.1:$2"
$(if [ "$4" = off ]; then printf '[fence]\nenabled = false'; else echo "${fence_section/$netns/$4}"; fi)
[[view]]
name = "bench"
networks = ["127.0.0.0/8"]
profiles = ["intune-core", "autopilot", "remote-help", "remote-help-gcc", "wns",
  "delivery-optimization", "apple", "android", "authentication", "win32-apps", "macos-apps",
  "microsoft-store",
  "attestation", "defender", "endpoint-privilege-management"]
EOF
}
# dnsfence as shipped (denied queries logged, to a file; workers sleep when idle), the same with
# busy polling (see README), and the same with the query log off ("dnsfence-nolog"): what
# logging costs.
dnsfence_config 5310 5319 0 "$netns" denied > "$W/dnsfence.toml"
dnsfence_config 5313 5318 200 "$netns-bp" denied > "$W/dnsfence-bp.toml"
dnsfence_config 5315 5316 0 "$netns-nolog" none > "$W/dnsfence-nolog.toml"
# With BASE_BIN, an older build on the same config: a before/after comparison in one run.
dnsfence_config 5314 5317 0 "$netns-base" denied | sed "s|^dir = .*|dir = \"${BASE_ZONES:-$PWD/zones}\"|" > "$W/dnsfence-base.toml"
cat > "$W/unbound.conf" <<EOF
server:
  interface: 127.0.0.1@5312
  port: 5312
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$W"
  pidfile: "$W/unbound.pid"
  num-threads: 1
  module-config: "iterator"
  do-not-query-localhost: no
  access-control: 127.0.0.0/8 allow
  so-rcvbuf: 4m
  msg-cache-size: 64m
  rrset-cache-size: 128m
  use-syslog: no
  logfile: ""
  verbosity: 0
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@5300
EOF

start() { # name port -> sets SERVER_PID
  case $1 in
    dnsfence) taskset -c 0 "$BIN" run -c "$W/dnsfence.toml" 2> "$W/dnsfence.log" & ;;
    dnsfence-bp) taskset -c 0 "$BIN" run -c "$W/dnsfence-bp.toml" 2> "$W/dnsfence-bp.log" & ;;
    dnsfence-base) taskset -c 0 "$BASE_BIN" run -c "$W/dnsfence-base.toml" 2> "$W/dnsfence-base.log" & ;;
    dnsfence-nolog) taskset -c 0 "$BIN" run -c "$W/dnsfence-nolog.toml" 2> "$W/dnsfence-nolog.log" & ;;
    dnsmasq) taskset -c 0 dnsmasq -k -C /dev/null -p 5311 --listen-address=127.0.0.1 --bind-interfaces \
               --no-resolv --no-hosts --server=127.0.0.1#5300 --cache-size=10000 --user=root \
               --pid-file="$W/dnsmasq.pid" 2> "$W/dnsmasq.log" & ;;
    unbound) taskset -c 0 unbound -d -c "$W/unbound.conf" 2> "$W/unbound.log" & ;;
    hickory) taskset -c 0 "$HICKORY" "$W/dnsfence-nolog.toml" 127.0.0.1:5320 2> "$W/hickory.log" & ;;
  esac
  SERVER_PID=$!
  pids+=("$SERVER_PID")
  for _ in $(seq 1 100); do
    dnsperf -s 127.0.0.1 -p "$2" -d "$W/allowed.q" -n 1 -t 1 2>/dev/null | grep -q 'Queries completed: *100 ' && return
    sleep 0.1
  done
  echo "$1 did not come up"; cat "$W/$1.log"; exit 1
}
SERVERS="dnsfence:5310 dnsfence-bp:5313 dnsfence-nolog:5315 dnsmasq:5311 unbound:5312 hickory:5320"
NAMES="dnsfence dnsfence-bp dnsfence-nolog dnsmasq unbound hickory"
if [ -n "${BASE_BIN:-}" ]; then
  SERVERS="$SERVERS dnsfence-base:5314"
  NAMES="$NAMES dnsfence-base"
fi
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Throughput: dnsperf's sender and receiver threads share CPU 1. Under the default scheduler
# every answer that lands while the receiver sleeps wakes it and preempts the sender: ~20k
# context switches a second, and the load generator itself saturates near 190k qps whatever
# the server. SCHED_BATCH (chrt --batch) turns off wake-up preemption, so the two threads
# take turns per time slice and dnsperf costs less per query; the same for every server.
perf() { # port file -> "qps completed lost"
  taskset -c 1 chrt --batch 0 dnsperf -s 127.0.0.1 -p "$1" -d "$2" -l "$RUN" -c 8 -q 500 -T 1 2>/dev/null \
    | awk '/Queries completed:/ {c=$3} /Queries lost:/ {l=$3} /Queries per second:/ {q=$4} END {print q, c, l}'
}
# Latency: default scheduling (SCHED_BATCH would hold answers for a time slice).
percentiles() { # port file -> "avg p50 p99" in microseconds
  taskset -c 1 dnsperf -s 127.0.0.1 -p "$1" -d "$2" -l 5 -Q "$FIXED_QPS" -c 8 -T 1 -v 2>/dev/null \
    | awk '/^> / {print $NF}' | sort -g \
    | awk '{a[NR]=$1; s+=$1} END {if (NR==0) {print "- - -"; exit}
           printf "%.0f %.0f %.0f\n", s/NR*1e6, a[int(NR*0.50)]*1e6, a[int(NR*0.99)]*1e6}'
}
TCK=$(getconf CLK_TCK)
declare -A R PID
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}'; }
# MAIN=0 skips the cached/denied measurements (the miss path below runs alone).
if [ "${MAIN:-1}" = 1 ]; then
# All servers run at once (pinned to CPU 0, idle unless measured), so that the rounds can be
# interleaved: this machine's neighbours make single runs noisy.
for s in $SERVERS; do
  name=${s%%:*}; port=${s##*:}
  start "$name" "$port"
  PID[$name]=$SERVER_PID
  # Warm: every allowed and denied name (denied names are cached negatively by the peers).
  taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$W/mix.q" -n 3 >/dev/null 2>&1 || true
  taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$W/denied.q" -n 2 >/dev/null 2>&1 || true
done
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }
# Throughput: ROUNDS interleaved rounds of every kind on every server; the median round counts.
for round in $(seq 1 "$ROUNDS"); do
  for kind in allowed denied mix; do
    for s in $SERVERS; do
      name=${s%%:*}; port=${s##*:}
      t0=$(cpu_ticks "${PID[$name]}")
      read -r qps done_ lost < <(perf "$port" "$W/$kind.q")
      t1=$(cpu_ticks "${PID[$name]}")
      R[$name.$kind.qps.$round]=$qps
      R[$name.lost]=$(( ${R[$name.lost]:-0} + ${lost:-0} ))
      R[$name.cpu.$kind.$round]=$(awk -v d=$((t1 - t0)) -v n="$done_" -v t="$TCK" 'BEGIN {printf "%.3f", (d / t) / n * 100000}')
    done
  done
done
for n in $NAMES; do
  for kind in allowed denied mix; do
    vals=(); for round in $(seq 1 "$ROUNDS"); do vals+=("${R[$n.$kind.qps.$round]}"); done
    R[$n.$kind.qps]=$(median "${vals[@]}")
    vals=(); for round in $(seq 1 "$ROUNDS"); do vals+=("${R[$n.cpu.$kind.$round]}"); done
    R[$n.$kind.cpu]=$(median "${vals[@]}")
  done
done
for round in $(seq 1 "$ROUNDS"); do
  read -r qps _ _ < <(perf 5310 "$W/flood.q")
  R[flood.$round]=$qps
done
vals=(); for round in $(seq 1 "$ROUNDS"); do vals+=("${R[flood.$round]}"); done
R[flood]=$(median "${vals[@]}")
# Latency at a fixed rate: LAT_ROUNDS interleaved rounds, median of each percentile.
LAT_ROUNDS=${LAT_ROUNDS:-5}
for round in $(seq 1 "$LAT_ROUNDS"); do
  for s in $SERVERS; do
    name=${s%%:*}; port=${s##*:}
    read -r avg p50 p99 < <(percentiles "$port" "$W/allowed.q")
    R[$name.avg.$round]=$avg; R[$name.p50.$round]=$p50; R[$name.p99.$round]=$p99
  done
done
for n in $NAMES; do
  for m in avg p50 p99; do
    vals=(); for round in $(seq 1 "$LAT_ROUNDS"); do vals+=("${R[$n.$m.$round]}"); done
    R[$n.$m]=$(median "${vals[@]}")
  done
done
# Memory: fill each cache with 100k distinct names, then read the peak RSS.
for s in $SERVERS; do
  name=${s%%:*}; port=${s##*:}
  taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$W/fill.q" -n 1 -q 200 >/dev/null 2>&1 || true
  R[$name.rss]=$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/${PID[$name]}/status")
done

echo
echo "dnsperf, $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); servers on CPU 0, dnsperf on CPU 1"
echo "throughput: ${RUN}s runs, dnsperf SCHED_BATCH, median of $ROUNDS interleaved rounds; latency: ${FIXED_QPS} qps, median of $LAT_ROUNDS rounds"
echo "fence: $([ -n "$netns" ] && echo "nftables in netns $netns" || echo "list backend (not root)"); dnsfence-bp = busy_poll_us = 200"
printf "%-12s %11s %11s %11s %7s %7s %7s %11s %8s %7s\n" server "allowed qps" "denied qps" "mix qps" "avg us" "p50 us" "p99 us" "CPU s/100k" "RSS MiB" lost
for n in $NAMES; do
  printf "%-12s %11.0f %11.0f %11.0f %7s %7s %7s %11s %8s %7s\n" "$n" "${R[$n.allowed.qps]}" "${R[$n.denied.qps]}" \
    "${R[$n.mix.qps]}" "${R[$n.avg]}" "${R[$n.p50]}" "${R[$n.p99]}" "${R[$n.allowed.cpu]}" "${R[$n.rss]}" "${R[$n.lost]}"
done
printf "dnsfence, denial flood of 300k distinct names: %.0f qps (%s of its repeated-denied rate)\n" \
  "${R[flood]}" "$(awk -v a="${R[flood]}" -v b="${R[dnsfence.denied.qps]}" 'BEGIN {printf "%.2fx", a / b}')"
echo
echo "dnsfence (shipped: denied queries logged) / dnsfence-nolog: denied qps $(ratio "${R[dnsfence.denied.qps]}" "${R[dnsfence-nolog.denied.qps]}")x," \
  "cached allowed qps $(ratio "${R[dnsfence.allowed.qps]}" "${R[dnsfence-nolog.allowed.qps]}")x (target: denied >= 0.9x)"
if [ -n "${BASE_BIN:-}" ]; then
  echo "dnsfence / dnsfence-base: cached allowed qps $(ratio "${R[dnsfence.allowed.qps]}" "${R[dnsfence-base.allowed.qps]}")x," \
    "denied qps $(ratio "${R[dnsfence.denied.qps]}" "${R[dnsfence-base.denied.qps]}")x," \
    "CPU per answer $(ratio "${R[dnsfence.allowed.cpu]}" "${R[dnsfence-base.allowed.cpu]}")x," \
    "p99 $(ratio "${R[dnsfence.p99]}" "${R[dnsfence-base.p99]}")x"
fi
for d in dnsfence dnsfence-bp; do
  for peer in dnsmasq unbound hickory; do
    echo "$d / $peer: cached allowed qps $(ratio "${R[$d.allowed.qps]}" "${R[$peer.allowed.qps]}")x," \
      "denied vs $peer cached $(ratio "${R[$d.denied.qps]}" "${R[$peer.allowed.qps]}")x," \
      "CPU per answer $(ratio "${R[$d.allowed.cpu]}" "${R[$peer.allowed.cpu]}")x," \
      "p99 $(ratio "${R[$d.p99]}" "${R[$peer.p99]}")x"
  done
done

fi

# ---- the miss path ------------------------------------------------------------------------
# Fresh servers for each scenario, so that every cache starts cold: dnsfence as shipped (with
# its nftables fence when root), "nofence" (the same with the fence off), dnsmasq, "nftset"
# (dnsmasq filling nftables sets with --nftset, as dnsfence's fence does), Unbound, "hickory"
# (examples/hickory_peer.rs) and, with BASE_BIN, "base". MISS=0 skips this part.
[ "${MISS:-1}" = 1 ] || exit 0
# Stop the servers measured above; NSD stays, it serves the miss path too.
for n in $NAMES; do
  [ -n "${PID[$n]:-}" ] && kill "${PID[$n]}" 2>/dev/null || true
done
sleep 0.5
MISS_NAMES="dnsfence nofence dnsmasq unbound hickory"
declare -A MPORT=([dnsfence]=5330 [dnsmasq]=5331 [unbound]=5332 [base]=5333 [hickory]=5334 [nofence]=5335 [nftset]=5336)
# dnsmasq's --nftset needs its sets in this namespace's nftables: a table of our own, with the
# two sets and no chain (it filters nothing), deleted on exit.
if [ -n "$netns" ] && dnsmasq --version | grep -q ' nftset'; then
  nftset_table="dnsfence_bench_$$"
  nft add table inet "$nftset_table"
  nft add set inet "$nftset_table" a4 '{ type ipv4_addr; flags timeout; }'
  nft add set inet "$nftset_table" a6 '{ type ipv6_addr; flags timeout; }'
  MISS_NAMES="dnsfence nofence dnsmasq nftset unbound hickory"
fi
[ -n "${BASE_BIN:-}" ] && MISS_NAMES="$MISS_NAMES base"
dnsmasq_to() { # port upstream-ip upstream-port extra-args...
  local port=$1 ip=$2 upstream=$3; shift 3
  taskset -c 0 dnsmasq -k -C /dev/null -p "$port" --listen-address=127.0.0.1 --bind-interfaces \
    --no-resolv --no-hosts --server="$ip#$upstream" --cache-size=10000 --user=root \
    --dns-forward-max=1024 --pid-file="$W/dnsmasq-$port.pid" "$@" 2> "$W/dnsmasq-$port.log" &
}
miss_servers() { # upstream-ip:port -> starts every server of MISS_NAMES on its MPORT
  local up=$1 ip=${1%:*} port=${1##*:}
  dnsfence_config 5330 5339 0 "$netns-cold" denied "$up" > "$W/cold-dnsfence.toml"
  dnsfence_config 5335 5337 0 off denied "$up" > "$W/cold-nofence.toml"
  dnsfence_config 5334 5327 0 off none "$up" > "$W/cold-hickory.toml"
  sed -e "s/127.0.0.1@5312/127.0.0.1@5332/; s/port: 5312/port: 5332/; s/forward-addr: .*/forward-addr: $ip@$port/" \
    "$W/unbound.conf" > "$W/cold-unbound.conf"
  for n in $MISS_NAMES; do
    case $n in
      dnsfence|nofence) taskset -c 0 "$BIN" run -c "$W/cold-$n.toml" 2> "$W/cold-$n.log" & ;;
      base)
        # The older build, its own firewall namespace, its own zones if given.
        dnsfence_config 5333 5338 0 "$netns-base" denied "$up" > "$W/cold-base.toml"
        [ -n "${BASE_ZONES:-}" ] && sed -i "s#^dir = .*#dir = \"$BASE_ZONES\"#" "$W/cold-base.toml"
        taskset -c 0 "$BASE_BIN" run -c "$W/cold-base.toml" 2> "$W/cold-base.log" & ;;
      dnsmasq) dnsmasq_to 5331 "$ip" "$port" ;;
      nftset) dnsmasq_to 5336 "$ip" "$port" "--nftset=/microsoft.com/4#inet#$nftset_table#a4,6#inet#$nftset_table#a6" ;;
      unbound) taskset -c 0 unbound -d -c "$W/cold-unbound.conf" 2> "$W/cold-unbound.log" & ;;
      hickory) taskset -c 0 "$HICKORY" "$W/cold-hickory.toml" 127.0.0.1:5334 2> "$W/cold-hickory.log" & ;;
    esac
    PID[cold-$n]=$!; pids+=($!)
  done
  sleep 1.5
  # A fenced dnsfence that starts on the elements earlier rounds left in its sets adopts them
  # before it serves (140,000 took longer than the sleep, and the 10 ms scenario that came first
  # measured its start): wait until it answers a denied name (answered without the upstream;
  # the peers are not asked, a probe through a dead upstream would teach them it is dead).
  for n in dnsfence nofence base; do
    case " $MISS_NAMES " in *" $n "*) wait_answering "${MPORT[$n]}" ;; esac
  done
}
wait_answering() { # port -> returns once dnsfence on 127.0.0.1:port answers (at most 30 s)
  python3 - "$1" <<'PY'
import socket, sys, time
q = bytes.fromhex("abcd01000001000000000000") + b"\x05ready\x07example\x00\x00\x01\x00\x01"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.2)
end = time.time() + 30
while time.time() < end:
    try:
        s.sendto(q, ("127.0.0.1", int(sys.argv[1])))
        s.recv(4096)
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
print(f"port {sys.argv[1]}: no answer within 30 s", file=sys.stderr)
PY
}
stop_miss_servers() {
  for n in $MISS_NAMES; do kill "${PID[cold-$n]}" 2>/dev/null || true; done
  for n in $MISS_NAMES; do wait "${PID[cold-$n]}" 2>/dev/null || true; done
  sleep 0.5
}
best() { # max|min values...
  local how=$1; shift
  printf '%s\n' "$@" | grep -v '^-*$' | sort -g | { [ "$how" = max ] && tail -1 || head -1; }
}
[ -n "$netns" ] && ip netns add "$netns-cold"
declare -A M
# 1. Cold cache, upstream on loopback. First misses at a fixed 2,000 qps (every server keeps up),
#    10k fresh names: the average latency of one miss, measured on servers that have not just run
#    a burst (right after its own burst a server's latency here was 2-5 times its fresh one, the
#    host still settling); then MISSES distinct allowed names, each asked once, as fast as dnsperf
#    can (500 outstanding: qps, and dnsperf's average latency, which is queueing at that load).
#    MISS_ROUNDS rounds, each with fresh servers, the order reversed every other round; the best
#    round counts.
for round in $(seq 1 "$MISS_ROUNDS"); do
  miss_servers 127.0.0.1:5300
  order=$MISS_NAMES
  [ $((round % 2)) = 0 ] && order=$(printf '%s\n' $MISS_NAMES | tac | tr '\n' ' ')
  # The same names for every server (each has a cache of its own), new ones each round.
  seq 1 10000 | sed "s/^/f$round-/; s/\$/.manage.microsoft.com A/" > "$W/fixed.q"
  seq 1 "$MISSES" | sed "s/^/m$round-/; s/\$/.manage.microsoft.com A/" > "$W/cold.q"
  for n in $order; do
    M[$n.fixed.$round]=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "${MPORT[$n]}" -d "$W/fixed.q" -n 1 -Q 2000 -c 8 -T 1 2>/dev/null \
      | awk '/Average Latency/ {printf "%.3f", $4 * 1000}')
  done
  for n in $order; do
    read -r qps lost lat < <(taskset -c 1 chrt --batch 0 dnsperf -s 127.0.0.1 -p "${MPORT[$n]}" -d "$W/cold.q" -n 1 -c 8 -q 500 -T 1 2>/dev/null \
      | awk '/Queries lost:/ {l=$3} /Queries per second:/ {q=$4} /Average Latency/ {a=$4} END {print q, l, a * 1000}')
    M[$n.cold.$round]=$qps; M[$n.cold.lat.$round]=$lat; M[$n.cold.lost]=$(( ${M[$n.cold.lost]:-0} + ${lost:-0} ))
  done
  stop_miss_servers
done
for n in $MISS_NAMES; do
  vals=(); lats=(); fixed=()
  for round in $(seq 1 "$MISS_ROUNDS"); do
    vals+=("${M[$n.cold.$round]:--}"); lats+=("${M[$n.cold.lat.$round]:--}"); fixed+=("${M[$n.fixed.$round]:--}")
  done
  M[$n.cold]=$(best max "${vals[@]}"); M[$n.cold.lat]=$(best min "${lats[@]}"); M[$n.fixed]=$(best min "${fixed[@]}")
done

# 2. Cold cache, upstream 10 ms away: NSD in a namespace of its own behind a veth with netem.
if [ -n "$netns" ] && command -v tc >/dev/null; then
  ip netns add dnsfence-up10
  ip link add dfup0 type veth peer name dfup1
  ip link set dfup1 netns dnsfence-up10
  ip addr add 10.99.0.1/30 dev dfup0; ip link set dfup0 up
  ip netns exec dnsfence-up10 ip addr add 10.99.0.2/30 dev dfup1
  ip netns exec dnsfence-up10 ip link set dfup1 up
  ip netns exec dnsfence-up10 ip link set lo up
  netem=1
  tc qdisc add dev dfup0 root netem delay 10ms 2>/dev/null || netem=0
  sed -e 's/127.0.0.1@5300/10.99.0.2@53/; s/nsd.pid/nsd10.pid/; s/zone.list/zone10.list/; s/xfrd.state/xfrd10.state/' \
    "$W/nsd.conf" > "$W/nsd10.conf"
  # Queries to 5399 vanish (a black hole for the overload scenario).
  ip netns exec dnsfence-up10 nft add table inet bh
  ip netns exec dnsfence-up10 nft add chain inet bh in '{ type filter hook input priority 0; }'
  ip netns exec dnsfence-up10 nft add rule inet bh in udp dport 5399 drop
  ip netns exec dnsfence-up10 nft add rule inet bh in tcp dport 5399 drop
  ip netns exec dnsfence-up10 taskset -c 1 nsd -d -c "$W/nsd10.conf" 2> "$W/nsd10.log" &
  pids+=($!)
  sleep 1
  far=10.99.0.2:53
  if [ "$netem" = 0 ]; then
    # No netem in this kernel (sch_netem): a user-space proxy on loopback delays each query and
    # each answer by 5 ms instead (10 ms round trip) in front of the loopback NSD.
    echo "no netem in this kernel: the 10 ms upstream is a delaying proxy (benches/delay_proxy.py)"
    taskset -c 1 python3 benches/delay_proxy.py 5301 5300 10 &
    pids+=($!)
    far=127.0.0.1:5301
    sleep 1
  fi
  miss_servers "$far"
  for n in $MISS_NAMES; do
    port=${MPORT[$n]}
    seq 1 20000 | sed "s/^/w/; s/\$/-$n.manage.microsoft.com A/" > "$W/$n-10.q"
    read -r qps ok < <(taskset -c 1 chrt --batch 0 dnsperf -s 127.0.0.1 -p "$port" -d "$W/$n-10.q" -n 1 -c 8 -q 2000 -T 1 2>/dev/null \
      | awk '/Queries per second:/ {q=$4} /Response codes:/ {for (i = 1; i < NF; i++) if ($i == "NOERROR") ok = $(i + 1)} END {print q, ok + 0}')
    M[$n.far]=$qps
    # The share answered NOERROR: a server that sheds (SERVFAIL at once past its limit on
    # resolutions in flight) completes more queries a second than one that resolves them all.
    M[$n.far.ok]=$(awk -v ok="$ok" 'BEGIN {printf "%.0f%%", ok * 100 / 20000}')
    # p99 of misses at a fixed 1,000 qps (fresh names).
    seq 1 10000 | sed "s/^/p/; s/\$/-$n.manage.microsoft.com A/" > "$W/$n-p.q"
    M[$n.far.p99]=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$W/$n-p.q" -n 1 -Q 1000 -c 8 -T 1 -v 2>/dev/null \
      | awk '/^> / {print $NF}' | sort -g | awk '{a[NR]=$1} END {if (NR==0) print "-"; else printf "%.1f", a[int(NR*0.99)]*1000}')
  done
  [ -n "${METRICS_OUT:-}" ] && curl -s 127.0.0.1:5339/metrics > "$METRICS_OUT" || true
  stop_miss_servers

  # 3. Overload: 15,000 qps of random allowed names for 10 s with the upstream black-holed:
  #    the share answered (SERVFAIL within the deadline counts), peak RSS, open descriptors.
  miss_servers 10.99.0.2:5399
  od -An -tx8 -N 1600000 /dev/urandom | tr -s ' ' '\n' | grep . | sed 's/$/.manage.microsoft.com A/' > "$W/overload.q"
  for n in $MISS_NAMES; do
    port=${MPORT[$n]}
    read -r sent done_ < <(taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$W/overload.q" -l 10 -Q 15000 -c 8 -q 20000 -t 2 -T 1 2>/dev/null \
      | awk '/Queries sent:/ {s=$3} /Queries completed:/ {c=$3} END {print s, c}')
    M[$n.over]=$(awk -v c="$done_" -v s="$sent" 'BEGIN {if (s > 0) printf "%.3f", c / s; else print "-"}')
    M[$n.over.rss]=$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/${PID[cold-$n]}/status")
    M[$n.over.fds]=$(ls "/proc/${PID[cold-$n]}/fd" | wc -l)
  done
  stop_miss_servers
else
  echo "the 10 ms and overload scenarios need root (a namespace with netem): skipped"
fi

echo
echo "miss path: cold cache ($MISSES distinct names, each once, 500 outstanding; best of $MISS_ROUNDS rounds), one miss's latency at 2k qps,"
echo "  upstream 10 ms away (20k names; p99 at 1k qps), overload (15k qps random allowed names, upstream black-holed, 10 s)"
echo "  fence: dnsfence $([ -n "$netns" ] && echo "nftables in netns $netns-cold" || echo "list backend (not root)"), nofence off; nftset = dnsmasq --nftset"
printf "%-9s %9s %9s %9s %8s %9s %8s %10s %9s %9s %6s\n" server "cold qps" "avg ms" "2k avg ms" "lost" "10ms qps" "10ms ok" "10ms p99" "overload" "RSS MiB" "fds"
for n in $MISS_NAMES; do
  printf "%-9s %9.0f %9s %9s %8s %9.0f %8s %10s %9s %9s %6s\n" "$n" "${M[$n.cold]:-0}" "${M[$n.cold.lat]:--}" "${M[$n.fixed]:--}" \
    "${M[$n.cold.lost]:--}" "${M[$n.far]:-0}" "${M[$n.far.ok]:--}" "${M[$n.far.p99]:--}" "${M[$n.over]:--}" "${M[$n.over.rss]:--}" "${M[$n.over.fds]:--}"
done
for pair in dnsfence/dnsmasq dnsfence/unbound dnsfence/hickory dnsfence/nftset nofence/dnsmasq nofence/unbound dnsfence/nofence ${BASE_BIN:+dnsfence/base}; do
  a=${pair%/*}; b=${pair#*/}
  [ -n "${M[$b.cold]:-}" ] || continue
  echo "$a / $b: cold-cache qps $(ratio "${M[$a.cold]}" "${M[$b.cold]}")x," \
    "one miss's latency $(ratio "${M[$a.fixed]:-0}" "${M[$b.fixed]:-0}")x," \
    "10 ms qps $(ratio "${M[$a.far]:-0}" "${M[$b.far]:-0}")x"
done
