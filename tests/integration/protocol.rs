//! Protocol edges: EDNS sizes, truncation and TCP retry, opcodes, question counts, classes, ANY,
//! and garbage on the sockets.

use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use tokio::io::AsyncWriteExt;

use crate::harness::{Server, ede, ips, query, rcode, run};

#[test]
fn large_answer_truncates_over_udp_and_the_tcp_retry_gets_it_all() {
    run(async {
        let f = Server::builder().start().await;
        let c = f.client();
        let name = "big.manage.microsoft.com.";
        // No EDNS: 512 bytes at most.
        let a = c.udp(&query(name, RecordType::A, None)).await;
        assert!(a.metadata.truncation, "TC must be set");
        assert!(a.answers.len() < 40);
        assert!(
            a.edns.is_none(),
            "no OPT in the answer to a query without one"
        );
        // EDNS with a small advertised size: still truncated.
        let a = c.udp(&query(name, RecordType::A, Some(512))).await;
        assert!(a.metadata.truncation);
        // The TCP retry carries all 40.
        let a = c.tcp(&query(name, RecordType::A, None)).await;
        assert!(!a.metadata.truncation);
        assert_eq!(ips(&a).0.len(), 40);
        // A client advertising 1232 bytes gets it all over UDP, and our payload size back.
        let a = c.ask(name, RecordType::A).await;
        assert!(!a.metadata.truncation);
        assert_eq!(ips(&a).0.len(), 40);
        assert_eq!(a.edns.as_ref().map(|e| e.max_payload()), Some(1232));
        // One advertising 65000 is capped at our max_udp_payload (1232 by default).
        let a = c.udp(&query(name, RecordType::A, Some(65000))).await;
        assert_eq!(a.edns.as_ref().map(|e| e.max_payload()), Some(1232));
        assert_eq!(
            f.upstream.seen.count(name),
            1,
            "the cache served every retry"
        );
        f.stop().await;
    });
}

#[test]
fn opcode_question_count_and_class() {
    run(async {
        let f = Server::builder().start().await;
        let c = f.client();
        // NOTIFY and STATUS: not implemented.
        for op in [OpCode::Notify, OpCode::Status] {
            let mut m = query("manage.microsoft.com.", RecordType::SOA, Some(1232));
            m.metadata.op_code = op;
            let a = c.udp(&m).await;
            assert_eq!(rcode(&a), ResponseCode::NotImp, "{op:?}");
        }
        // Two questions, and none: FORMERR.
        let mut two = query("manage.microsoft.com.", RecordType::A, Some(1232));
        two.add_query(Query::query(
            Name::from_ascii("graph.microsoft.com.").unwrap(),
            RecordType::A,
        ));
        assert_eq!(rcode(&c.udp(&two).await), ResponseCode::FormErr);
        let mut none = Message::new(77, MessageType::Query, OpCode::Query);
        none.metadata.recursion_desired = true;
        assert_eq!(rcode(&c.udp(&none).await), ResponseCode::FormErr);
        // CHAOS class (version.bind and friends): REFUSED.
        let mut chaos = Message::new(78, MessageType::Query, OpCode::Query);
        let mut q = Query::query(Name::from_ascii("version.bind.").unwrap(), RecordType::TXT);
        q.set_query_class(DNSClass::CH);
        chaos.add_query(q);
        assert_eq!(rcode(&c.udp(&chaos).await), ResponseCode::Refused);
        // Zone transfers: REFUSED, over TCP where they would be asked.
        let a = c
            .tcp(&query("manage.microsoft.com.", RecordType::AXFR, None))
            .await;
        assert_eq!(rcode(&a), ResponseCode::Refused);
        // EDNS version 1: BADVERS.
        let mut v1 = query("manage.microsoft.com.", RecordType::A, Some(1232));
        v1.edns.as_mut().unwrap().set_version(1);
        // 16 is BADVERS in an answer with OPT (hickory's decoder names the value BADSIG).
        assert_eq!(u16::from(rcode(&c.udp(&v1).await)), 16);
        assert_eq!(
            f.upstream.seen.all(),
            vec![],
            "none of these reached the upstream"
        );
        f.stop().await;
    });
}

#[test]
fn any_gets_the_rfc8482_answer_or_the_deny() {
    run(async {
        let f = Server::builder().start().await;
        let c = f.client();
        let a = c
            .udp(&query("manage.microsoft.com.", RecordType::ANY, Some(1232)))
            .await;
        assert_eq!(rcode(&a), ResponseCode::NoError);
        assert_eq!(a.answers.len(), 1);
        match &a.answers[0].data {
            RData::HINFO(h) => assert_eq!(&*h.cpu, b"RFC8482"),
            other => panic!("expected HINFO, got {other:?}"),
        }
        let a = c
            .udp(&query("evil.example.", RecordType::ANY, Some(1232)))
            .await;
        assert_eq!(rcode(&a), ResponseCode::NXDomain);
        assert_eq!(ede(&a).map(|e| e.0), Some(15));
        assert_eq!(f.upstream.seen.all(), vec![]);
        f.stop().await;
    });
}

#[test]
fn garbage_on_udp_and_tcp_does_not_stop_the_server() {
    run(async {
        let f = Server::builder().start().await;
        let c = f.client();
        // A deterministic xorshift stream of junk packets of many sizes.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for len in [0usize, 1, 5, 11, 12, 13, 17, 29, 64, 300, 512, 1400] {
            let junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Any answer (FORMERR) or none is fine; the server must survive.
            let _ = c.udp_raw(&junk, Duration::from_millis(100)).await;
        }
        // A valid header claiming one question, then garbage where the name should be.
        let mut bad_name = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        bad_name.extend_from_slice(&[0xc0, 0xff, 0x3f, 0x41]);
        if let Some(a) = c.udp_raw(&bad_name, Duration::from_secs(2)).await {
            let a = Message::from_vec(&a).expect("FORMERR is well formed");
            assert_eq!(a.metadata.response_code, ResponseCode::FormErr);
        }
        // TCP: a length prefix promising more than is sent, then junk, then a hang-up.
        for junk_len in [1usize, 2, 3, 40, 700] {
            let mut s = tokio::net::TcpStream::connect(f.addr).await.unwrap();
            let junk: Vec<u8> = (0..junk_len).map(|_| next() as u8).collect();
            let _ = s.write_all(&junk).await;
            drop(s);
        }
        // Still serving, on both transports.
        let a = c
            .udp(&query("manage.microsoft.com.", RecordType::A, Some(1232)))
            .await;
        assert_eq!(rcode(&a), ResponseCode::NoError);
        let a = c
            .tcp(&query("manage.microsoft.com.", RecordType::A, Some(1232)))
            .await;
        assert_eq!(rcode(&a), ResponseCode::NoError);
        f.stop().await;
    });
}

/// Busy polling (`[server] busy_poll_us`) and the grown receive buffer: a burst of 400 queries
/// sent at once from one socket, half allowed (cached after the first) and half denied, is
/// answered whole, each with its own ID and the right code; after the worker has gone back to
/// sleep, a lone query still wakes it; and the server stops promptly while polling.
#[test]
fn busy_polling_workers_answer_a_burst_whole_then_sleep_and_wake() {
    run(async {
        let f = Server::builder()
            .config("[server]\nlisten = [\"127.0.0.1:0\"]\nudp_workers = 2\nbusy_poll_us = 500\n")
            .start()
            .await;
        let c = f.client();
        // Warm the cache so the burst is served from it.
        let warm = c
            .ask("enterpriseenrollment.manage.microsoft.com.", RecordType::A)
            .await;
        assert_eq!(rcode(&warm), ResponseCode::NoError);

        // The client's own receive buffer must not be what drops answers: it is grown too, and
        // a reader thread drains it while the burst goes out.
        const BURST: u16 = 400;
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        dnsfence::base::sockopt::grow_buffer(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            dnsfence::base::sockopt::Buffer::Receive,
            1 << 20,
        );
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let reader = {
            let sock = sock.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                let mut buf = [0u8; 1500];
                while answers.len() < BURST as usize {
                    match sock.recv_from(&mut buf) {
                        Ok((n, _)) => answers.push(buf[..n].to_vec()),
                        Err(_) => break,
                    }
                }
                answers
            })
        };
        for id in 0..BURST {
            let name = if id.is_multiple_of(2) {
                "enterpriseenrollment.manage.microsoft.com."
            } else {
                "evil.example."
            };
            let mut q = query(name, RecordType::A, Some(1232));
            q.metadata.id = id;
            sock.send_to(&q.to_vec().unwrap(), f.addr).unwrap();
        }
        let answers = tokio::task::spawn_blocking(move || reader.join().unwrap())
            .await
            .unwrap();
        let mut seen = vec![false; BURST as usize];
        for bytes in &answers {
            let m = Message::from_vec(bytes).unwrap();
            let id = m.metadata.id;
            assert!(!seen[id as usize], "answer {id} came twice");
            seen[id as usize] = true;
            let want = if id.is_multiple_of(2) {
                ResponseCode::NoError
            } else {
                ResponseCode::NXDomain
            };
            assert_eq!(rcode(&m), want, "answer {id}");
        }
        let missing: Vec<usize> = (0..seen.len()).filter(|i| !seen[*i]).collect();
        assert!(missing.is_empty(), "unanswered: {missing:?}");

        // Well past the polling window the workers sleep; a lone query wakes one.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let a = c
            .ask("enterpriseenrollment.manage.microsoft.com.", RecordType::A)
            .await;
        assert_eq!(rcode(&a), ResponseCode::NoError);
        assert_eq!(
            ips(&a).0,
            ["192.0.2.10".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        let started = std::time::Instant::now();
        f.stop().await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "stop took {:?}",
            started.elapsed()
        );
    });
}
