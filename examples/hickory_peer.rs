//! A filtering forwarder built on hickory-server, the peer `benches/dnsperf.sh` measures dnsfence
//! against: it reads the same dnsfence configuration (views, zones, upstream servers), answers a
//! name a client's view allows through hickory-server's forwarder (hickory-resolver, its cache
//! sized as `[upstream] cache_size`, UDP to the same upstream, 0x20 on as dnsfence), and denies
//! any other name with NXDOMAIN without forwarding it; a client outside every view is refused.
//! No firewall, no query log, no metrics: the server hickory gives, plus the allowlist.
//!
//! It exists to measure a choice (README, "Performance"): dnsfence answers UDP and TCP itself,
//! with one parser and one encoder, instead of through hickory-server.
//!
//!     cargo run --release --example hickory_peer -- CONFIG 127.0.0.1:5320

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dnsfence::catalog::policy::Policy;
use hickory_proto::op::{Header, Metadata, ResponseCode};
use hickory_proto::rr::LowerName;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverOpts};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::forwarder::{ForwardConfig, ForwardZoneHandler};
use hickory_server::zone_handler::{Catalog, MessageResponseBuilder};

/// The allowlist in front of hickory-server's catalog (one forward zone, the root).
struct Filter {
    policy: Policy,
    forward: Catalog,
}

/// An answer with no records and `rcode`.
async fn refuse<R: ResponseHandler>(
    request: &Request,
    mut response: R,
    rcode: ResponseCode,
) -> ResponseInfo {
    let mut md = Metadata::response_from_request(&request.metadata);
    md.recursion_available = true;
    md.response_code = rcode;
    let builder = MessageResponseBuilder::new(&request.queries, None);
    let message = builder.build(
        md,
        std::iter::empty(),
        std::iter::empty(),
        std::iter::empty(),
        std::iter::empty(),
    );
    response.send_response(message).await.unwrap_or_else(|_| {
        ResponseInfo::from(Header {
            metadata: md,
            counts: Default::default(),
        })
    })
}

#[async_trait::async_trait]
impl RequestHandler for Filter {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        let Some(view) = self.policy.view_for(request.src().ip()) else {
            return refuse(request, response, ResponseCode::Refused).await;
        };
        let allowed = match request.queries.queries() {
            [q] => view.lookup(&q.name().to_string()).is_some(),
            _ => false,
        };
        if !allowed {
            return refuse(request, response, ResponseCode::NXDomain).await;
        }
        self.forward.handle_request::<R, T>(request, response).await
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, config, listen] = args.as_slice() else {
        return Err("usage: hickory_peer CONFIG LISTEN-ADDR".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let (config, policy) = dnsfence::daemon::app::load(std::path::Path::new(config))?;
    let name_servers = config
        .upstream
        .servers
        .iter()
        .map(|s| {
            let conn = |protocol| {
                let mut c = ConnectionConfig::new(protocol);
                c.port = s.addr.port();
                c
            };
            NameServerConfig::new(
                s.addr.ip(),
                true,
                vec![conn(ProtocolConfig::Udp), conn(ProtocolConfig::Tcp)],
            )
        })
        .collect();
    let mut options = ResolverOpts::default();
    options.cache_size = config.upstream.cache_size;
    options.timeout = config.upstream.timeout;
    options.attempts = 1;
    options.edns0 = true;
    options.case_randomization = true;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let handler = ForwardZoneHandler::builder_tokio(ForwardConfig {
            name_servers,
            options: Some(options),
        })
        .build()?;
        let mut forward = Catalog::new();
        forward.upsert(
            LowerName::from(hickory_proto::rr::Name::root()),
            vec![Arc::new(handler)],
        );
        let mut server = hickory_server::Server::new(Filter { policy, forward });
        server.register_socket(tokio::net::UdpSocket::bind(listen).await?);
        server.register_listener(
            tokio::net::TcpListener::bind(listen).await?,
            Duration::from_secs(5),
            64,
        );
        eprintln!("hickory_peer: serving {listen}");
        server.block_until_done().await?;
        Ok(())
    })
}
