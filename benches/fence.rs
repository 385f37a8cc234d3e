//! Fence benchmark: answer-to-kernel-ACK latency and element insert rate, against real nftables in
//! a network namespace made for the run, compared with one spawned `nft add element` per address.
//!
//! Run: `cargo bench --bench fence` (root; prints why it is skipped otherwise). Bounded: about
//! 15 s. Targets (issue "firewall sets"): p99 ≤ 1 ms for one admit and under 10k answers/s of
//! distinct names; ≥ 100k element inserts/s with batching.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dnsfence::config::{AdmitFailure, FenceBackend, FenceConfig, FenceMode, TableRef, ViewFence};
use dnsfence::fence::ViewPlan;
use dnsfence::fence::{Admission, Fence};
use dnsfence::resolve::answer::AnswerAddr;

/// Why the benchmark's elements are admitted.
fn bench_admission() -> Admission {
    Admission {
        name: "bench".into(),
        chain: Box::new([]),
        endpoint_sets: Box::new([]),
        would_deny: false,
        via: None,
    }
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn addr(i: u32) -> IpAddr {
    // 10.0.0.0/8 inside the namespace's own set: never sent any traffic.
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i & 0x00ff_ffff)))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED fence benchmark: not root (nftables in a network namespace needs root)");
        return;
    }
    let name = format!("dnsfence-bench-{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("SKIPPED fence benchmark: `ip netns add` failed (install iproute2)");
        return;
    }
    let ns = Netns(name);
    let cfg = FenceConfig {
        enabled: true,
        backend: FenceBackend::Nftables,
        netns: Some(ns.0.clone()),
        nft: PathBuf::from("nft"),
        min_ttl: Duration::from_secs(300),
        max_ttl: Duration::from_secs(86_400),
        grace: Duration::from_secs(60),
        admit_deadline: Duration::from_secs(5),
        on_admit_failure: AdmitFailure::Answer,
        resync_interval: Duration::from_secs(60),
        recheck: Duration::from_secs(60),
    };
    let plan = ViewPlan {
        name: "bench".into(),
        clients: vec!["192.0.2.0/24".parse().unwrap()],
        fence: ViewFence {
            table: TableRef {
                family: "inet".into(),
                name: "dnsfence".into(),
            },
            set_v4: "bench_v4".into(),
            set_v6: "bench_v6".into(),
            net_v4: "bench_net_v4".into(),
            net_v6: "bench_net_v6".into(),
            mode: FenceMode::Addr,
        },
        statics: Vec::new(),
    };
    let fence = Arc::new(Fence::start(&cfg, vec![plan]).expect("fence starts"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut next = 0u32;
    let mut fresh = |n: u32| {
        let start = next;
        next += n;
        (start..start + n)
            .map(|i| AnswerAddr {
                ip: addr(i),
                ttl: 60,
            })
            .collect::<Vec<_>>()
    };

    // 1. One admit at a time: the latency an answer waits for the kernel.
    let mut single = Vec::with_capacity(2000);
    rt.block_on(async {
        for _ in 0..2000 {
            let a = fresh(1);
            let t = Instant::now();
            fence
                .admit(0, &bench_admission, &a, &[], 0, false)
                .await
                .unwrap();
            single.push(t.elapsed());
        }
    });
    single.sort();

    // 2. 10,000 answers per second of distinct names for 2 s, each with 2 addresses.
    let mut loaded: Vec<Duration> = Vec::with_capacity(20_000);
    let batches_before = fence
        .stats()
        .batches
        .load(std::sync::atomic::Ordering::Relaxed);
    let load_start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::with_capacity(20_000);
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for _ in 0..2000 {
            tick.tick().await;
            for _ in 0..10 {
                let a = fresh(2);
                let f = fence.clone();
                tasks.push(tokio::spawn(async move {
                    let t = Instant::now();
                    f.admit(0, &bench_admission, &a, &[], 0, false)
                        .await
                        .unwrap();
                    t.elapsed()
                }));
            }
        }
        for t in tasks {
            loaded.push(t.await.unwrap());
        }
    });
    let load_secs = load_start.elapsed().as_secs_f64();
    let load_batches = fence
        .stats()
        .batches
        .load(std::sync::atomic::Ordering::Relaxed)
        - batches_before;
    loaded.sort();

    // 3. Throughput: 256 admits of 64 addresses in flight at a time, 400k elements.
    let total = 400_000u32;
    let per = 64u32;
    let t = Instant::now();
    rt.block_on(async {
        let mut inflight = Vec::new();
        for _ in 0..(total / per) {
            let a = fresh(per);
            let f = fence.clone();
            inflight.push(tokio::spawn(async move {
                f.admit(0, &bench_admission, &a, &[], 0, false)
                    .await
                    .unwrap();
            }));
            if inflight.len() >= 256 {
                for h in inflight.drain(..) {
                    h.await.unwrap();
                }
            }
        }
        for h in inflight {
            h.await.unwrap();
        }
    });
    let batched_rate = total as f64 / t.elapsed().as_secs_f64();

    // 4. The same with one `nft add element` process per address, as other resolvers do.
    let spawned = 300u32;
    let t = Instant::now();
    for i in 0..spawned {
        let ip = addr(10_000_000 + i);
        let status = Command::new("ip")
            .args([
                "netns", "exec", &ns.0, "nft", "add", "element", "inet", "dnsfence", "bench_v4",
            ])
            .arg(format!("{{ {ip} timeout 360s }}"))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let spawned_rate = spawned as f64 / t.elapsed().as_secs_f64();
    // `ip netns exec` adds its own exec; time the bare `nft` too for a fair ratio.
    let t = Instant::now();
    for _ in 0..100 {
        Command::new("ip")
            .args(["netns", "exec", &ns.0, "true"])
            .status()
            .unwrap();
    }
    let exec_overhead = t.elapsed().as_secs_f64() / 100.0;
    let bare_nft = 1.0 / (1.0 / spawned_rate - exec_overhead).max(1e-6);

    println!(
        "fence benchmark (real nftables, network namespace {}):",
        ns.0
    );
    println!(
        "  one admit at a time (2000):          p50 {:>8.1?}  p99 {:>8.1?}",
        percentile(&single, 0.50),
        percentile(&single, 0.99)
    );
    println!(
        "  10k answers/s x 2 s (2 addrs each):  p50 {:>8.1?}  p99 {:>8.1?}  ({:.0} answers/s achieved, {} batches)",
        percentile(&loaded, 0.50),
        percentile(&loaded, 0.99),
        loaded.len() as f64 / load_secs,
        load_batches
    );
    println!("  element inserts, batched netlink:    {batched_rate:>10.0} /s");
    println!(
        "  element inserts, nft per address:    {bare_nft:>10.0} /s (bare nft; {spawned_rate:.0}/s via ip netns exec)"
    );
    println!(
        "  ratio batched / spawned nft:         {:>10.0}x",
        batched_rate / bare_nft
    );
    drop(fence);
}
