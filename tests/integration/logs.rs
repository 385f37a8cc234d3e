//! The query log never floods and never lies: floods are sampled with a summary of what was left
//! out, every lost line is counted (a full disk included), and SIGHUP reopens the file.

use std::path::Path;
use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::harness::{Server, eventually, log_lines, query, run, sample, scrape};

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// 400 denied names of one registrable domain within a second or two: at most
/// sample_per_second lines per second are written, the rest are summarized in a sampled_out
/// line, and lines + left out = queries.
#[test]
fn a_denial_flood_is_sampled_per_domain_with_a_summary() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("q.jsonl");
        let f = Server::builder()
            .config(&format!(
                "[server]\nlisten = [\"127.0.0.1:0\"]\nudp_workers = 1\n\
             [query_log]\nlevel = \"denied\"\npath = \"{}\"\nsample_per_second = 5\n",
                log.display()
            ))
            .start()
            .await;
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for i in 0..400 {
            let q = query(&format!("x{i}.flood.example."), RecordType::A, Some(1232));
            sock.send_to(&q.to_vec().unwrap(), f.addr).await.unwrap();
            let mut buf = [0u8; 512];
            tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
        }
        // A query in a later second makes the worker write the summary of the flood's seconds.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        f.client().ask("other.example.", RecordType::A).await;
        assert!(
            eventually(Duration::from_secs(3), || lines(&log)
                .iter()
                .any(|l| l.get("sampled_out").is_some()))
            .await
        );
        let all = lines(&log);
        let written = all
            .iter()
            .filter(|l| {
                l["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with(".flood.example."))
            })
            .count();
        let left_out: u64 = all
            .iter()
            .filter(|l| l["domain"] == "flood.example")
            .map(|l| l["sampled_out"].as_u64().unwrap())
            .sum();
        assert!(written <= 15, "at most 5 a second: {written}");
        assert_eq!(written as u64 + left_out, 400);
        let summary = all.iter().find(|l| l.get("sampled_out").is_some()).unwrap();
        assert_eq!(summary["view"], "loopback");
        let s = scrape(&f).await;
        assert_eq!(
            sample(&s, "dnsfence_querylog_sampled_total", &[]),
            Some(left_out as f64)
        );
        assert_eq!(
            sample(&s, "dnsfence_querylog_dropped_total", &[]),
            Some(0.0)
        );
        f.stop().await;
    });
}

/// Writing to a full disk (/dev/full) loses every line, and every one is counted.
#[test]
fn lines_lost_to_a_full_disk_are_counted() {
    if !Path::new("/dev/full").exists() {
        crate::harness::skip("lines_lost_to_a_full_disk_are_counted", "no /dev/full");
        return;
    }
    run(async {
        let f = Server::builder()
            .config("[query_log]\nlevel = \"all\"\npath = \"/dev/full\"\n")
            .start()
            .await;
        let c = f.client();
        for name in ["a.example.", "b.example.", "manage.microsoft.com."] {
            c.ask(name, RecordType::A).await;
        }
        let counted = crate::harness::eventually_async(Duration::from_secs(3), || async {
            sample(&scrape(&f).await, "dnsfence_querylog_dropped_total", &[]) == Some(3.0)
        })
        .await;
        assert!(counted, "three lines lost, three counted");
        f.stop().await;
    });
}

/// logrotate's default moves the file and expects a new one: after SIGHUP dnsfence writes to a
/// new file at the configured path; a reload that changes the level applies it.
#[test]
fn sighup_reopens_the_log_file_and_applies_the_level() {
    run(async {
        let upstream = crate::harness::Authority::start().await;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("q.jsonl");
        let path = dir.path().join("dnsfence.toml");
        let text = crate::harness::config_text(
            upstream.addr,
            "\"127.0.0.0/8\"",
            "",
            &format!(
                "[query_log]\nlevel = \"denied\"\npath = \"{}\"\n",
                log.display()
            ),
        );
        std::fs::write(&path, &text).unwrap();
        let config = dnsfence::config::Config::load(&path).unwrap();
        let f = Server::from_config(config, upstream).await.unwrap();
        let c = f.client();
        c.ask("first.example.", RecordType::A).await;
        assert_eq!(log_lines(&log, 1).await.len(), 1);
        let rotated = dir.path().join("q.jsonl.1");
        std::fs::rename(&log, &rotated).unwrap();
        // Reload with level "all": the allowed query is now logged too.
        std::fs::write(&path, text.replace("level = \"denied\"", "level = \"all\"")).unwrap();
        f.signals
            .send(dnsfence::daemon::signal::Signal::Reload)
            .unwrap();
        assert!(
            eventually(Duration::from_secs(3), || log.exists()).await,
            "reopened"
        );
        c.ask("second.example.", RecordType::A).await;
        c.ask("manage.microsoft.com.", RecordType::A).await;
        let new = log_lines(&log, 2).await;
        assert_eq!(new.len(), 2, "{new:?}");
        assert_eq!(new[0]["name"], "second.example.");
        assert_eq!(new[1]["verdict"], "allowed", "level all applied");
        assert_eq!(lines(&rotated).len(), 1, "nothing more in the rotated file");

        // A refused reload (a broken config) still reopens the file: logrotate's postrotate
        // reload must not leave dnsfence writing to the moved file.
        std::fs::rename(&log, &rotated).unwrap();
        std::fs::write(&path, "[server\n").unwrap();
        f.signals
            .send(dnsfence::daemon::signal::Signal::Reload)
            .unwrap();
        assert!(
            eventually(Duration::from_secs(3), || log.exists()).await,
            "reopened after a refused reload"
        );
        c.ask("third.example.", RecordType::A).await;
        assert_eq!(log_lines(&log, 1).await[0]["name"], "third.example.");
        f.stop().await;
    });
}
