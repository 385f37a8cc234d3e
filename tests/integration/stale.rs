//! Serve-stale (RFC 8767): with the upstream silent, an expired answer is served after
//! `stale_answer_after_ms` with TTL 30 and EDE 3, the refresh goes on in the background, and
//! the firewall re-admits its addresses.

use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::harness::{Server, ede, ips, log_lines, rcode, run, sample, scrape};

#[test]
fn an_expired_answer_is_served_stale_while_the_upstream_is_silent() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("q.jsonl");
        let f = Server::builder()
            .config(&format!(
                "[upstream]\ntimeout_ms = 700\ncache_size = 100\npositive_max_ttl_secs = 1\n\
             stale_answer_after_ms = 200\nstale_max_secs = 3600\n\
             [fence]\nenabled = true\nbackend = \"list\"\n\
             [query_log]\nlevel = \"all\"\npath = \"{}\"\n",
                log.display()
            ))
            .start()
            .await;
        let c = f.client();
        let name = "manage.microsoft.com.";
        let fresh = c.ask(name, RecordType::A).await;
        assert_eq!(ede(&fresh), None);
        // A second later on the cache's clock, without waiting for it.
        f.engine.clock.advance(Duration::from_millis(1100));
        f.upstream.set_silent(true);
        let t = Instant::now();
        let stale = c.ask(name, RecordType::A).await;
        let took = t.elapsed();
        assert_eq!(rcode(&stale), ResponseCode::NoError);
        assert_eq!(ips(&stale), ips(&fresh), "the same records");
        assert!(
            stale.answers.iter().all(|r| r.ttl == 30),
            "{:?}",
            stale.answers
        );
        assert_eq!(ede(&stale).map(|e| e.0), Some(3));
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_millis(650),
            "after stale_answer_after_ms, before the upstream deadline: {took:?}"
        );
        let lines = log_lines(&log, 2).await;
        assert_eq!(lines[1]["stale"], true);
        assert_eq!(lines[1]["rcode"], "NOERROR");
        assert!(lines[0].get("stale").is_none());
        let s = scrape(&f).await;
        assert_eq!(sample(&s, "dnsfence_stale_answers_total", &[]), Some(1.0));
        // Its addresses went through the fence again.
        let admits: f64 = ["ok", "fresh"]
            .iter()
            .filter_map(|r| sample(&s, "dnsfence_fence_admits_total", &[("result", r)]))
            .sum();
        assert_eq!(admits, 2.0, "the fresh answer and the stale one");

        // The upstream is back: the next query refreshes and gets a fresh answer.
        f.upstream.set_silent(false);
        tokio::time::sleep(Duration::from_millis(800)).await;
        let again = c.ask(name, RecordType::A).await;
        assert_eq!(ede(&again), None, "fresh again");
        assert!(again.answers.iter().all(|r| r.ttl <= 1));
        f.stop().await;
    });
}

#[test]
fn without_serve_stale_an_expired_answer_is_not_served() {
    run(async {
        let f = Server::builder().config("[upstream]\ntimeout_ms = 500\ncache_size = 100\npositive_max_ttl_secs = 1\nstale_max_secs = 0\n").start()
        .await;
        let c = f.client();
        c.ask("manage.microsoft.com.", RecordType::A).await;
        // A second later on the cache's clock, without waiting for it.
        f.engine.clock.advance(Duration::from_millis(1100));
        f.upstream.set_silent(true);
        let a = c.ask("manage.microsoft.com.", RecordType::A).await;
        assert_eq!(rcode(&a), ResponseCode::ServFail);
        assert_eq!(ede(&a).map(|e| e.0), Some(22));
        f.stop().await;
    });
}
