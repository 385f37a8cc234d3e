#!/usr/bin/env bash
# Peer sync, measured: the lag from gateway A's kernel confirming an element to gateway B
# receiving it, and the CPU each side spends per synced element, at a steady admit rate.
#
#   sudo bash benches/peer-sync.sh          # about a minute; root (two network namespaces)
#   RATE=4000 SECONDS_PER_RUN=20 sudo bash benches/peer-sync.sh
#
# Two namespaces joined by a veth (10.202.0.1, 10.202.0.2), each with Unbound as its upstream
# (NAMES distinct names, each its own address) and dnsfence with nftables sets, syncing over the
# veth with certificates made here. dnsperf in A's namespace asks every name once at RATE queries
# a second (each a new element: RATE admits a second). Reported: B's dnsfence_sync_lag_seconds
# p50/p99 (interpolated in its buckets), the elements B received against those A admitted, and
# CPU seconds per 1,000 synced elements on each side — A's measured against the same run with
# sync off, so it is what syncing adds. Everything stops by itself.
# Needs: dnsperf unbound openssl nft ip curl (Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "peer-sync.sh needs root (network namespaces)"; exit 1; }
RATE=${RATE:-2000}
RUN=${SECONDS_PER_RUN:-10}
NAMES=$((RATE * RUN))
for tool in dnsperf unbound openssl nft ip curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool"; exit 1; }
done
cargo build --release --quiet
BIN=$PWD/target/release/dnsfence
W=$(mktemp -d)
A="dnsfence-psa-$$"; B="dnsfence-psb-$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
ip netns add "$A"; ip netns add "$B"
ip link add "ps$$a" netns "$A" type veth peer name "ps$$b" netns "$B"
for side in a b; do
  ns=$A; addr=10.202.0.1; [ "$side" = b ] && { ns=$B; addr=10.202.0.2; }
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$addr/24" dev "ps$$$side"
  ip -n "$ns" link set "ps$$$side" up
done

# Certificates: one CA, one for each gateway (both ends of a link).
(
  cd "$W"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
    -days 1 -subj /CN=bench-ca -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign 2>/dev/null
  for gw in a b; do
    printf 'subjectAltName=DNS:gw-%s.bench\nextendedKeyUsage=serverAuth,clientAuth\n' "$gw" > "gw-$gw.cnf"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "gw-$gw.key" \
      -out "gw-$gw.csr" -subj "/CN=gw-$gw.bench" 2>/dev/null
    openssl x509 -req -in "gw-$gw.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
      -out "gw-$gw.pem" -days 1 -extfile "gw-$gw.cnf" 2>/dev/null
  done
)

# Unbound in each namespace: NAMES names under manage.microsoft.com, each its own address.
{
  printf 'server:\n  interface: 127.0.0.2\n  port: 53\n  do-daemonize: no\n  use-syslog: no\n'
  printf '  chroot: ""\n  username: ""\n  pidfile: ""\n  do-ip6: no\n  module-config: "iterator"\n'
  printf '  access-control: 127.0.0.0/8 allow\n  num-threads: 1\n'
  awk -v n="$NAMES" 'BEGIN { for (i = 1; i <= n; i++)
    printf "  local-data: \"s%d.manage.microsoft.com. 600 A 198.18.%d.%d\"\n", i, int(i / 250), i % 250 + 1 }'
} > "$W/unbound.conf"
for ns in "$A" "$B"; do
  ip netns exec "$ns" unbound -d -c "$W/unbound.conf" 2>/dev/null &
  pids+=($!)
done
seq 1 "$NAMES" | sed 's/^/s/; s/$/.manage.microsoft.com A/' > "$W/names.q"

config() { # side peer sync(on|off)
  local me=$1 peer=$2 addr=10.202.0.1 peer_addr=10.202.0.2
  [ "$me" = b ] && { addr=10.202.0.2; peer_addr=10.202.0.1; }
  cat <<EOF
[server]
listen = ["127.0.0.1:5353"]
[zones]
dir = "$PWD/zones"
[upstream]
servers = ["127.0.0.2:53"]
cache_size = $((NAMES * 2))
[query_log]
level = "denied"
path = "$W/queries-$me.jsonl"
[http]
listen = "127.0.0.1:9153"
[fence]
enabled = true
EOF
  if [ "$3" = on ]; then
  cat <<EOF
[sync]
listen = "$addr:8853"
ca_file = "$W/ca.pem"
cert_file = "$W/gw-$me.pem"
key_file = "$W/gw-$me.key"
[[sync.peer]]
name = "gw-$peer.bench"
address = "$peer_addr:8853"
EOF
  fi
  cat <<EOF
[[view]]
name = "kiosk"
networks = ["127.0.0.0/8"]
profiles = ["intune-core"]
EOF
}

cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
metric() { # ns series
  ip netns exec "$1" curl -s 127.0.0.1:9153/metrics | awk -v s="$2" 'index($0, s " ") == 1 { print $2 }'
}
TCK=$(getconf CLK_TCK)

run() { # sync(on|off) -> "a_cpu_ticks b_cpu_ticks"
  ip netns exec "$A" nft flush ruleset
  ip netns exec "$B" nft flush ruleset
  config a b "$1" > "$W/a.toml"; config b a "$1" > "$W/b.toml"
  ip netns exec "$A" "$BIN" run -c "$W/a.toml" 2> "$W/a-$1.log" & pa=$!
  ip netns exec "$B" "$BIN" run -c "$W/b.toml" 2> "$W/b-$1.log" & pb=$!
  pids+=("$pa" "$pb")
  for ns in "$A" "$B"; do
    until ip netns exec "$ns" curl -sf 127.0.0.1:9153/healthz >/dev/null 2>&1; do sleep 0.05; done
  done
  if [ "$1" = on ]; then
    until ip netns exec "$A" curl -s 127.0.0.1:9153/readyz | grep -q ': up'; do sleep 0.05; done
  fi
  local a0 b0
  a0=$(cpu "$pa"); b0=$(cpu "$pb")
  ip netns exec "$A" dnsperf -s 127.0.0.1 -p 5353 -d "$W/names.q" -n 1 -Q "$RATE" -c 8 -T 1 \
    > "$W/dnsperf-$1.txt" 2>&1 || true
  sleep 1
  A_CPU=$(( $(cpu "$pa") - a0 )); B_CPU=$(( $(cpu "$pb") - b0 ))
  if [ "$1" = on ]; then
    RECEIVED=$(metric "$B" 'dnsfence_sync_elements_received_total{peer="gw-a.bench"}')
    ADMITTED=$(ip netns exec "$A" nft -j list set inet dnsfence kiosk_v4 | grep -o '"elem"' | wc -l)
    ip netns exec "$B" curl -s 127.0.0.1:9153/metrics | grep '^dnsfence_sync_lag_seconds_bucket' > "$W/lag.txt"
  fi
  kill "$pa" "$pb"; wait "$pa" "$pb" 2>/dev/null || true
}

run off; A_OFF=$A_CPU
run on
# p50 and p99 from the cumulative buckets, linear within a bucket (as histogram_quantile).
read -r p50 p99 < <(awk -F'[{}", ]+' '
  { for (i = 1; i <= NF; i++) if ($i == "le=") le = $(i + 1); n[++k] = $NF; b[k] = le }
  END {
    total = n[k]
    for (q = 1; q <= 2; q++) {
      want = (q == 1 ? 0.5 : 0.99) * total; prev_n = 0; prev_b = 0
      for (i = 1; i <= k; i++) {
        if (n[i] >= want) {
          hi = (b[i] == "+Inf" ? prev_b : b[i])
          v = (n[i] == prev_n) ? hi : prev_b + (hi - prev_b) * (want - prev_n) / (n[i] - prev_n)
          printf "%.2f%s", v * 1000, (q == 1 ? " " : "\n"); break
        }
        prev_n = n[i]; prev_b = b[i]
      }
    }
  }' "$W/lag.txt")
per_k() { awk -v t="$1" -v n="$2" -v tck="$TCK" 'BEGIN { if (n > 0) printf "%.3f", t / tck / n * 1000; else print "-" }'; }
echo "peer sync: $NAMES distinct names at $RATE admits/s for ${RUN} s; nftables on both; 2 cores"
echo "elements admitted on A: $ADMITTED; received by B: ${RECEIVED%.*}"
echo "lag (A's kernel confirmation to B's receipt): p50 ${p50} ms, p99 ${p99} ms"
echo "CPU per 1,000 synced elements: A adds $(per_k $((A_CPU - A_OFF)) "$ADMITTED") s (A with sync $(per_k "$A_CPU" "$ADMITTED") s, without $(per_k "$A_OFF" "$ADMITTED") s per 1,000 answers); B $(per_k "$B_CPU" "${RECEIVED%.*}") s"
