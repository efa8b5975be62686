//! The client against fake nodes (tests/support): authentication, every
//! operation, concurrency, failover, retry rules, deadlines, certificates
//! and limits. Assertions are about outcomes, never durations.

mod support;

use std::sync::Arc;
use std::time::Duration;

use meridian_client::wire::{Operation, Request, WireError};
use meridian_client::{Client, ClientConfig, Consistency, Error, Kind, RegisterValue, SetValue};
use support::{Action, FakeServer, Pki, TOKEN, dead_address};
use tokio::sync::Notify;

/// Bound on any single test step that should finish promptly, so a hang
/// fails the test instead of stalling the run.
const STEP: Duration = Duration::from_secs(20);

async fn step<F: std::future::IntoFuture>(f: F) -> F::Output {
    tokio::time::timeout(STEP, f.into_future())
        .await
        .expect("step did not finish in time")
}

fn is_incr(op: &Operation) -> bool {
    matches!(op, Operation::CounterIncr { .. })
}

fn is_counter_read(op: &Operation) -> bool {
    matches!(op, Operation::CounterRead { .. })
}

#[tokio::test]
async fn every_operation_round_trips() -> anyhow::Result<()> {
    let pki = Pki::new("test CA");
    let a = FakeServer::start("node-a", &pki);
    let client = step(Client::connect(pki.client_config(vec![a.entry()]))).await?;
    assert_eq!(client.current_node().as_deref(), Some("node-a"));

    let likes = client.counter("likes");
    let r = step(likes.incr(5).consistency(Consistency::Quorum)).await?;
    assert_eq!(
        (r.value, r.node.as_str(), r.consistency),
        (5, "node-a", Consistency::Quorum)
    );
    assert_eq!(step(likes.incr(-2)).await?.value, 3);
    assert_eq!(step(likes.read()).await?.value, 3);
    assert_eq!(step(likes.delete()).await?.value, 0);

    // Non-UTF-8 keys and members are fine.
    let cart = client.set(vec![0xff, 0x00, 0xfe]);
    let r = step(cart.add(["pear", "apple"])).await?;
    assert_eq!(
        r.value,
        SetValue {
            members: vec![b"apple".to_vec(), b"pear".to_vec()],
            count: 2
        }
    );
    let r = step(cart.add([vec![0xc3, 0x28]])).await?;
    assert!(r.value.contains(&[0xc3, 0x28]));
    let r = step(cart.remove(["pear"])).await?;
    assert_eq!(r.value.count, 2);
    assert!(!r.value.contains(b"pear"));
    assert_eq!(step(cart.members()).await?.value, r.value);
    assert_eq!(step(cart.delete()).await?.value, SetValue::default());

    let profile = client.register("profile");
    assert_eq!(step(profile.get()).await?.value, RegisterValue::default());
    let put = step(profile.put(vec![0u8, 159, 146, 150])).await?;
    assert_eq!(put.value.value.as_deref(), Some(&[0u8, 159, 146, 150][..]));
    let got = step(profile.get()).await?;
    assert_eq!(got.value, put.value);
    let deleted = step(profile.delete()).await?;
    assert_eq!(deleted.value.value, None);
    assert!(deleted.value.hlc > put.value.hlc);

    let status = step(client.status()).await?;
    assert_eq!(status.node, "node-a");
    step(client.debug_clock_offset(250)).await?;

    // The raw interface, with the client's default timeout filled in.
    let reply = step(client.execute(Request {
        op: Operation::CounterRead {
            key: b"likes".to_vec(),
        },
        consistency: Consistency::Leader,
        timeout_ms: 0,
    }))
    .await?;
    assert_eq!(reply.node, "node-a");
    let sent = a.received();
    assert_eq!(sent.last().unwrap().timeout_ms, 5000);
    assert_eq!(sent.last().unwrap().consistency, Consistency::Leader);
    // Every request went over the one connection.
    assert_eq!(a.connections(), 1);
    Ok(())
}

#[tokio::test]
async fn defaults_and_per_request_settings_reach_the_server() -> anyhow::Result<()> {
    let pki = Pki::new("test CA");
    let a = FakeServer::start("node-a", &pki);
    let config = pki
        .client_config(vec![a.entry()])
        .with_consistency(Consistency::All)
        .with_timeout(Duration::from_millis(1500));
    let client = step(Client::connect(config)).await?;
    step(client.counter("c").read()).await?;
    step(
        client
            .counter("c")
            .read()
            .consistency(Consistency::Local)
            .timeout(Duration::from_micros(200_500)),
    )
    .await?;
    let sent = a.received();
    assert_eq!(
        (sent[0].consistency, sent[0].timeout_ms),
        (Consistency::All, 1500)
    );
    // Sub-millisecond parts round up.
    assert_eq!(
        (sent[1].consistency, sent[1].timeout_ms),
        (Consistency::Local, 201)
    );
    let e = step(client.counter("c").read().timeout(Duration::ZERO))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid_argument");
    assert_eq!(a.received().len(), 2);
    Ok(())
}

#[tokio::test]
async fn wrong_token_is_unauthorized() {
    let pki = Pki::new("test CA");
    let a = FakeServer::start("node-a", &pki);
    let mut config = pki.client_config(vec![a.entry()]);
    config.token = "not-the-token".into();
    let e = step(Client::connect(config)).await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized(_)), "{e:?}");
    assert!(e.is_definite());
    assert_eq!(e.code(), "unauthorized");
}

#[tokio::test]
async fn two_hundred_concurrent_requests_share_one_connection() -> anyhow::Result<()> {
    let pki = Pki::new("test CA");
    let a = FakeServer::start("node-a", &pki);
    let client = step(Client::connect(pki.client_config(vec![a.entry()]))).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        let client = client.clone();
        tasks.spawn(async move {
            match i % 3 {
                0 => client.counter("hits").incr(1).await.map(drop),
                1 => client.set("seen").add([i.to_be_bytes()]).await.map(drop),
                _ => client
                    .register(format!("r{i}"))
                    .put(i.to_be_bytes())
                    .await
                    .map(drop),
            }
        });
    }
    let mut ok = 0;
    while let Some(result) = step(tasks.join_next()).await {
        result??;
        ok += 1;
    }
    assert_eq!(ok, 200);
    assert_eq!(step(client.counter("hits").read()).await?.value, 67);
    assert_eq!(step(client.set("seen").members()).await?.value.count, 67);
    assert_eq!(a.connections(), 1);
    Ok(())
}

#[tokio::test]
async fn a_slow_request_does_not_block_a_fast_one() -> anyhow::Result<()> {
    let pki = Pki::new("test CA");
    let a = FakeServer::start("node-a", &pki);
    let release = Arc::new(Notify::new());
    let gate = release.clone();
    a.on_request(move |req| match &req.op {
        Operation::CounterIncr { key, .. } if key == b"slow" => Action::WaitFor(gate.clone()),
        _ => Action::Serve,
    });
    let client = step(Client::connect(pki.client_config(vec![a.entry()]))).await?;
    let slow = tokio::spawn(client.counter("slow").incr(1).into_future());
    // Make sure the slow request is at the server before the fast one goes.
    step(async {
        while a.received_where(is_incr) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // The fast one completes while the slow one is still held.
    assert_eq!(step(client.counter("fast").incr(2)).await?.value, 2);
    assert!(!slow.is_finished());
    release.notify_one();
    assert_eq!(step(slow).await??.value, 1);
    Ok(())
}

#[tokio::test]
async fn connect_fails_over_when_the_preferred_node_is_down() -> anyhow::Result<()> {
    let pki = Pki::new("test CA");
    let b = FakeServer::start("node-b", &pki);
    let mut down = b.entry();
    down.name = "node-a".into();
    down.address = dead_address().to_string();
    let config = pki.client_config(vec![b.entry(), down]).prefer("node-a");
    let client = step(Client::connect(config)).await?;
    assert_eq!(client.current_node().as_deref(), Some("node-b"));
    assert_eq!(step(client.counter("x").incr(1)).await?.node, "node-b");
    Ok(())
}

#[tokio::test]
async fn preference_by_address_is_honoured() -> anyhow::Result<()> {
    let pki = Pki::new("test CA");
    let a = FakeServer::start("node-a", &pki);
    let b = FakeServer::start("node-b", &pki);
    let config = pki
        .client_config(vec![a.entry(), b.entry()])
        .prefer(&b.addr.to_string());
    let client = step(Client::connect(config)).await?;
    assert_eq!(client.current_node().as_deref(), Some("node-b"));
    assert_eq!(a.connections(), 0);
    Ok(())
}

#[tokio::test]
async fn host_names_resolve() -> anyhow::Result<()> {
    let pki = Pki::new("test CA");
    let a = FakeServer::start("node-a", &pki);
    let mut entry = a.entry();
    entry.address = format!("localhost:{}", a.addr.port());
    let client = step(Client::connect(pki.client_config(vec![entry]))).await?;
    assert_eq!(step(client.counter("x").incr(1)).await?.node, "node-a");
    Ok(())
}

#[tokio::test]
async fn a_pinned_client_does_not_fail_over() -> anyhow::Result<()> {
    let pki = Pki::new("test CA");
    let b = FakeServer::start("node-b", &pki);
    let mut down = b.entry();
    down.name = "node-a".into();
    down.address = dead_address().to_string();

    // Connecting: the pinned node is down, so no connection at all.
    let config = pki.client_config(vec![down, b.entry()]).pinned("node-a");
    let e = step(Client::connect(config)).await.unwrap_err();
    assert!(
        matches!(&e, Error::Connect { node, .. } if node == "node-a"),
        "{e:?}"
    );
    assert!(e.is_definite());
    assert_eq!(b.connections(), 0);

    // Connected and pinned: a read whose connection drops is not moved.
    let a = FakeServer::start("node-a", &pki);
    a.on_request(|_| Action::Drop { apply: false });
    let config = pki
        .client_config(vec![a.entry(), b.entry()])
        .pinned("node-a");
    let client = step(Client::connect(config)).await?;
    let e = step(client.counter("x").read()).await.unwrap_err();
    assert!(
        matches!(e, Error::ConnectionLost(_) | Error::Connect { .. }),
        "{e:?}"
    );
    assert_eq!(b.connections(), 0);
    assert!(b.received().is_empty());
    Ok(())
}

#[tokio::test]
async fn a_read_is_retried_on_another_node_after_a_dropped_connection() -> anyhow::Result<()> {
    let pki = Pki::new("test CA");
    let a = FakeServer::start("node-a", &pki);
    let b = FakeServer::start("node-b", &pki);
    a.on_request(|req| match req.op {
        Operation::CounterRead { .. } => Action::Drop { apply: false },
        _ => Action::Serve,
    });
    let client = step(Client::connect(
        pki.client_config(vec![a.entry(), b.entry()]),
    ))
    .await?;
    assert_eq!(client.current_node().as_deref(), Some("node-a"));
    let r = step(client.counter("x").read()).await?;
    assert_eq!(r.node, "node-b");
    assert_eq!(client.current_node().as_deref(), Some("node-b"));
    assert_eq!(b.received_where(is_counter_read), 1);
    // node-a saw it first (and may have seen it once more on a fresh
    // connection after node-b, never before).
    assert!(a.received_where(is_counter_read) >= 1);
    Ok(())
}

#[tokio::test]
async fn a_write_is_never_resent_after_a_dropped_connection() -> anyhow::Result<()> {
    let pki = Pki::new("test CA");
    let a = FakeServer::start("node-a", &pki);
    let b = FakeServer::start("node-b", &pki);
    a.on_request(|req| match req.op {
        Operation::CounterIncr { .. } => Action::Drop { apply: true },
        _ => Action::Serve,
    });
    let client = step(Client::connect(
        pki.client_config(vec![a.entry(), b.entry()]),
    ))
    .await?;
    let e = step(client.counter("x").incr(1)).await.unwrap_err();
    assert!(matches!(e, Error::ConnectionLost(_)), "{e:?}");
    assert!(!e.is_definite());
    assert_eq!(e.code(), "connection_lost");
    assert_eq!(a.received_where(is_incr), 1);
    assert_eq!(b.received_where(is_incr), 0);
    // The increment was applied before the drop: a read shows it, which is
    // exactly why the client must not have re-sent it. The client
    // reconnects lazily (to node-a, still the preferred node).
    let r = step(client.counter("x").read()).await?;
    assert_eq!((r.node.as_str(), r.value), ("node-a", 1));
    assert_eq!(a.connections(), 2);
    Ok(())
}

#[tokio::test]
async fn the_client_reconnects_after_the_node_closes_the_connection() -> anyhow::Result<()> {
    let pki = Pki::new("test CA");
    let a = FakeServer::start("node-a", &pki);
    let client = step(Client::connect(pki.client_config(vec![a.entry()]))).await?;
    step(client.counter("x").incr(1)).await?;
    a.disconnect_all();
    // Whether or not the client has noticed the close yet, a read succeeds
    // on a fresh connection.
    assert_eq!(step(client.counter("x").read()).await?.value, 1);
    assert_eq!(a.connections(), 2);
    Ok(())
}

#[tokio::test]
async fn the_client_deadline_gives_an_indeterminate_timeout() -> anyhow::Result<()> {
    let pki = Pki::new("test CA");
    let a = FakeServer::start("node-a", &pki);
    a.on_request(|_| Action::Hang);
    let client = step(Client::connect(pki.client_config(vec![a.entry()]))).await?;
    let e = step(
        client
            .counter("x")
            .incr(1)
            .timeout(Duration::from_millis(20)),
    )
    .await
    .unwrap_err();
    assert_eq!(
        e,
        Error::Timeout {
            acked: 0,
            needed: 0
        }
    );
    assert!(!e.is_definite());
    assert_eq!(a.received()[0].timeout_ms, 20);
    Ok(())
}

#[tokio::test]
async fn server_errors_are_returned_with_their_meaning() -> anyhow::Result<()> {
    let pki = Pki::new("test CA");
    let a = FakeServer::start("node-a", &pki);
    let b = FakeServer::start("node-b", &pki);
    a.on_request(|req| match &req.op {
        Operation::CounterRead { key } => match key.as_slice() {
            b"unavailable" => Action::Fail(WireError::Unavailable {
                needed: 2,
                reachable: 1,
            }),
            b"timeout" => Action::Fail(WireError::Timeout {
                acked: 1,
                needed: 2,
            }),
            b"wrong" => Action::Fail(WireError::WrongType {
                message: "it's a set".into(),
            }),
            b"busy" => Action::Fail(WireError::Overloaded {
                message: "too many requests".into(),
            }),
            b"bug" => Action::Fail(WireError::Internal {
                message: "oops".into(),
            }),
            _ => Action::Garbage,
        },
        _ => Action::Serve,
    });
    let client = step(Client::connect(
        pki.client_config(vec![a.entry(), b.entry()]),
    ))
    .await?;
    let read = |key: &'static str| client.counter(key).read();
    let e = step(read("unavailable")).await.unwrap_err();
    assert_eq!(
        e,
        Error::Unavailable {
            needed: 2,
            reachable: 1
        }
    );
    assert!(e.is_definite());
    let e = step(read("timeout")).await.unwrap_err();
    assert_eq!(
        e,
        Error::Timeout {
            acked: 1,
            needed: 2
        }
    );
    assert!(!e.is_definite());
    assert_eq!(step(read("wrong")).await.unwrap_err().code(), "wrong_type");
    assert_eq!(step(read("busy")).await.unwrap_err().code(), "overloaded");
    let e = step(read("bug")).await.unwrap_err();
    assert_eq!((e.code(), e.is_definite()), ("internal", false));
    let e = step(read("garbage")).await.unwrap_err();
    assert_eq!((e.code(), e.is_definite()), ("protocol", false));
    // Server answers are final: nothing went to node-b.
    assert!(b.received().is_empty());
    Ok(())
}

#[tokio::test]
async fn a_refused_hello_moves_to_the_next_node() -> anyhow::Result<()> {
    let pki = Pki::new("test CA");
    let a = FakeServer::start("node-a", &pki);
    let b = FakeServer::start("node-b", &pki);
    a.refuse_hello(WireError::Overloaded {
        message: "too many connections".into(),
    });
    let client = step(Client::connect(
        pki.client_config(vec![a.entry(), b.entry()]),
    ))
    .await?;
    assert_eq!(client.current_node().as_deref(), Some("node-b"));

    // With nowhere else to go, the refusal is reported.
    let e = step(Client::connect(pki.client_config(vec![a.entry()])))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Connect { message, .. } if message.contains("too many connections")),
        "{e:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    let pki = Pki::new("test CA");
    let rogue = Pki::new("rogue CA");
    // The node trusts our client certificate, but its own certificate
    // comes from a CA the client does not trust.
    let a = FakeServer::start_with("node-a", &rogue.node("node-a"), &pki);
    let e = step(Client::connect(pki.client_config(vec![a.entry()])))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Connect { message, .. } if message.contains("certificate")),
        "{e:?}"
    );
    assert!(a.received().is_empty());
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused_by_the_node() {
    let pki = Pki::new("test CA");
    let rogue = Pki::new("rogue CA");
    let a = FakeServer::start("node-a", &pki);
    let id = rogue.client();
    let config = ClientConfig::new(
        vec![a.entry()],
        pki.ca_pem.clone(),
        id.cert_pem,
        id.key_pem,
        TOKEN,
    );
    let e = step(Client::connect(config)).await.unwrap_err();
    assert!(
        matches!(&e, Error::Connect { message, .. } if message.contains("certificate")),
        "{e:?}"
    );
    assert!(a.received().is_empty());
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let pki = Pki::new("test CA");
    // node-b's certificate served at node-a's configured entry.
    let a = FakeServer::start_with("node-a", &pki.node("node-b"), &pki);
    let e = step(Client::connect(pki.client_config(vec![a.entry()])))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Connect { message, .. } if message.contains("certificate")),
        "{e:?}"
    );
}

#[tokio::test]
async fn oversized_requests_are_refused_before_sending() -> anyhow::Result<()> {
    let pki = Pki::new("test CA");
    let a = FakeServer::start("node-a", &pki);
    let client = step(Client::connect(pki.client_config(vec![a.entry()]))).await?;
    let key = vec![b'k'; meridian_client::wire::MAX_KEY_BYTES + 1];
    let e = step(client.counter(key).incr(1)).await.unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    assert!(e.is_definite());
    let member = vec![0u8; meridian_client::wire::MAX_VALUE_BYTES + 1];
    let e = step(client.set("s").add([member.clone()]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid_argument");
    let e = step(client.register("r").put(member)).await.unwrap_err();
    assert_eq!(e.code(), "invalid_argument");
    assert!(a.received().is_empty());
    // The largest allowed key is fine.
    let key = vec![b'k'; meridian_client::wire::MAX_KEY_BYTES];
    step(client.counter(key).incr(1)).await?;
    assert_eq!(a.received().len(), 1);
    Ok(())
}

#[tokio::test]
async fn an_unknown_preferred_node_is_a_config_error() {
    let pki = Pki::new("test CA");
    let config = pki
        .client_config(vec![meridian_client::NodeEntry {
            name: "node-a".into(),
            region: "r".into(),
            address: dead_address().to_string(),
            resp: None,
        }])
        .prefer("node-z");
    let e = step(Client::connect(config)).await.unwrap_err();
    assert!(
        matches!(&e, Error::Config(m) if m.contains("node-z")),
        "{e:?}"
    );
}

#[tokio::test]
async fn handles_are_spawnable_and_kinds_are_distinct() -> anyhow::Result<()> {
    let pki = Pki::new("test CA");
    let a = FakeServer::start("node-a", &pki);
    let client = step(Client::connect(pki.client_config(vec![a.entry()]))).await?;
    let counter = client.counter("same");
    let task = tokio::spawn(counter.incr(3).into_future());
    assert_eq!(step(task).await??.value, 3);
    step(client.set("same").add(["m"])).await?;
    let deletes = a.received_where(|op| {
        matches!(
            op,
            Operation::Delete {
                kind: Kind::Set,
                ..
            }
        )
    });
    assert_eq!(deletes, 0);
    step(client.close()).await;
    // Still usable: reconnects.
    assert_eq!(step(client.counter("same").read()).await?.value, 3);
    Ok(())
}
