//! The whole synchronous decide-and-encode step, on an engine built from a real config and the
//! shipped zones: any bytes in, no panic, and every reply parses with hickory-proto with the
//! query's ID.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use dnsfence::query::event::Transport;
use dnsfence::query::{Engine, Now};
use libfuzzer_sys::fuzz_target;

fn engine() -> &'static Arc<Engine> {
    // The runtime lives beside the engine, reachable for the whole run (no leak to report).
    static ENGINE: OnceLock<(tokio::runtime::Runtime, Arc<Engine>)> = OnceLock::new();
    &ENGINE.get_or_init(|| {
        let zones = concat!(env!("CARGO_MANIFEST_DIR"), "/../zones");
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[http]\nlisten = \"off\"\n[zones]\ndir = \"{zones}\"\n\
             [upstream]\nservers = [\"127.0.0.1:9\"]\n[query_log]\nlevel = \"none\"\n\
             [[view]]\nname = \"fuzz\"\nnetworks = [\"127.0.0.0/8\"]\nprofiles = [\"intune-core\", \"apple\"]\n"
        );
        let config = dnsfence::config::Config::parse(
            std::path::Path::new("fuzz.toml"),
            &text,
            std::path::Path::new("/nonexistent"),
        )
        .expect("the fuzz config parses");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let app = rt
            .block_on(dnsfence::daemon::app::App::build(config))
            .expect("the engine builds");
        (rt, app.engine)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let engine = engine();
    let mut out = [0u8; 4096];
    for client in [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
    ] {
        if let Now::Reply(n) =
            engine.answer_now(data, client, Transport::Udp, Instant::now(), &mut out)
        {
            let reply =
                hickory_proto::op::Message::from_vec(&out[..n]).expect("every reply parses");
            assert_eq!(reply.metadata.id, u16::from_be_bytes([data[0], data[1]]));
        }
    }
});
