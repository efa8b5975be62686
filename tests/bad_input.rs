//! Bad input at the client protocol's edge, on three in-process nodes:
//! every kind is refused with the right error, changes nothing, and the
//! node keeps serving everyone else (a good client, and the same
//! connection where it stays open).
//!
//! Address blocks (`127.31.<block>.x`): 30 oversized and garbage
//! requests, 31 authentication, 32 the other cluster of 31.

use std::time::Duration;

use anyhow::Result;
use meridian::raw::{Identity, RawConnection};
use meridian::{InProcessCluster, Obj, Spec, TestClusterFiles, Val};
use meridian_client::wire::{
    self, HelloReply, MAX_FRAME_BYTES, MAX_KEY_BYTES, MAX_OBJECT_BYTES, MAX_VALUE_BYTES, Operation,
    Request, Response, WireError,
};
use meridian_client::{Client, Consistency, Error};
use meridian_engine::MAX_MEMBERS_PER_OP;

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";

fn request(op: Operation) -> Request {
    Request {
        op,
        consistency: Consistency::Quorum,
        timeout_ms: 5_000,
    }
}

/// Asserts `response` is an `InvalidArgument` mentioning `mention`.
fn assert_invalid(response: &Response, mention: &str) {
    match response {
        Response::Err(WireError::InvalidArgument { message }) => {
            assert!(
                message.contains(mention),
                "{message:?} does not mention {mention:?}"
            )
        }
        other => panic!("expected InvalidArgument ({mention}), got {other:?}"),
    }
}

/// A good client can still read and write through `name`.
async fn still_serving(cluster: &InProcessCluster, name: &str) -> Result<()> {
    let client = cluster.client(name).await?;
    let r = client
        .counter("still-serving")
        .incr(1)
        .consistency(Consistency::Quorum)
        .await?;
    assert!(r.value >= 1);
    Ok(())
}

/// Oversized keys, members and values are refused by the client before
/// anything is sent, and by the node when a raw connection sends them
/// anyway; so are frames over the limit, truncated frames and garbage.
/// Nothing of them is stored; limits themselves are accepted; the node, and
/// the raw connection itself, keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_and_garbage_requests_are_refused_and_the_node_keeps_serving() -> Result<()> {
    let cluster = InProcessCluster::start(Spec::new(30)).await?;
    cluster.wait_connected().await;
    let client = cluster.client(US).await?;
    let big_key = vec![b'k'; MAX_KEY_BYTES + 1];
    let big_value = vec![b'v'; MAX_VALUE_BYTES + 1];
    let many_members: Vec<Vec<u8>> = (0..=MAX_OBJECT_BYTES / MAX_VALUE_BYTES)
        .map(|i| vec![i as u8; MAX_VALUE_BYTES])
        .collect();

    // Client side: refused before sending, definitely.
    let refusals = [
        client.counter(big_key.clone()).incr(1).await.map(drop),
        client.counter(big_key.clone()).read().await.map(drop),
        client.set(big_key.clone()).add(["m"]).await.map(drop),
        client.register(big_key.clone()).get().await.map(drop),
        client.register("r").put(big_value.clone()).await.map(drop),
        client.set("s").add([big_value.clone()]).await.map(drop),
        client.set("s").remove([big_value.clone()]).await.map(drop),
        client.set("s").add(many_members.clone()).await.map(drop),
    ];
    for (i, r) in refusals.into_iter().enumerate() {
        let e = r.unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument(_)) && e.is_definite(),
            "{i}: {e:?}"
        );
    }

    // Server side: the same requests, and worse, over a raw connection with
    // the cluster's client certificate and token.
    let config = cluster.dir.client_config()?;
    let identity = Identity::of(&config);
    let address = cluster.node(US).addresses.client;
    let raw = RawConnection::authenticated(address, US, &identity, config.token.as_bytes()).await?;
    let cases = [
        (
            Operation::CounterIncr {
                key: big_key.clone(),
                delta: 1,
            },
            "key",
        ),
        (
            Operation::CounterRead {
                key: big_key.clone(),
            },
            "key",
        ),
        (
            Operation::SetRead {
                key: big_key.clone(),
            },
            "key",
        ),
        (
            Operation::Delete {
                kind: wire::Kind::Register,
                key: big_key.clone(),
            },
            "key",
        ),
        (
            Operation::RegisterPut {
                key: b"r".to_vec(),
                value: big_value.clone(),
            },
            "value",
        ),
        (
            Operation::SetAdd {
                key: b"s".to_vec(),
                members: vec![big_value.clone()],
            },
            "member",
        ),
        (
            Operation::SetRemove {
                key: b"s".to_vec(),
                members: vec![big_value.clone()],
            },
            "member",
        ),
        (
            Operation::SetAdd {
                key: b"s".to_vec(),
                members: many_members.clone(),
            },
            "object",
        ),
    ];
    for (op, mention) in cases {
        assert_invalid(&raw.request(&request(op)).await?, mention);
    }
    // A length prefix over the frame limit: refused without being read.
    let over = ((MAX_FRAME_BYTES + 1) as u32).to_le_bytes();
    assert_invalid(&raw.request_frame(&over).await?, "bad request frame");
    // A frame cut short, an empty stream, and garbage of a valid length.
    let valid = wire::encode(&request(Operation::CounterRead { key: b"c".to_vec() }));
    assert_invalid(
        &raw.request_frame(&valid[..valid.len() - 3]).await?,
        "bad request frame",
    );
    assert_invalid(&raw.request_frame(&[]).await?, "bad request frame");
    // Random bytes that happen to decode as a request (a fieldless `Status`,
    // a `DebugClockOffset` whose fields take any bits) are a request, not
    // garbage: only bytes the decoder refuses are sent as garbage.
    let mut sent = 0;
    while sent < 20 {
        let garbage = meridian::marker();
        if wire::decode::<Request>(&garbage).is_ok() {
            continue;
        }
        sent += 1;
        let mut frame = (garbage.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&garbage);
        assert_invalid(&raw.request_frame(&frame).await?, "malformed request");
    }
    // A valid frame with a byte flipped in its enum tags.
    let mut flipped = valid.clone();
    flipped[4..].iter_mut().for_each(|b| *b ^= 0x5a);
    assert!(matches!(
        raw.request_frame(&flipped).await?,
        Response::Err(WireError::InvalidArgument { .. })
    ));

    // Too many members in one operation: the client doesn't know that
    // limit, the node refuses it.
    let too_many = (0..=MAX_MEMBERS_PER_OP).map(|i| format!("m{i}"));
    let e = client.set("s").add(too_many).await.unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.contains("members")) && e.is_definite(),
        "{e:?}"
    );

    // Nothing was stored.
    for (obj, empty) in [
        (Obj::register("r"), Val::Register(None)),
        (Obj::set("s"), Val::Set(Vec::new())),
    ] {
        assert_eq!(obj.read(&client, Consistency::All).await?, empty);
    }
    // The limits themselves are fine, through the client and replicated.
    let max_key = vec![b'k'; MAX_KEY_BYTES];
    let max_value = vec![b'v'; MAX_VALUE_BYTES];
    client
        .register(max_key.clone())
        .put(max_value.clone())
        .consistency(Consistency::All)
        .await?;
    let eu = cluster.client(EU).await?;
    assert_eq!(
        eu.register(max_key)
            .get()
            .consistency(Consistency::Local)
            .await?
            .value
            .value,
        Some(max_value)
    );

    // The same raw connection still serves good requests, and so does the node.
    match raw
        .request(&request(Operation::CounterIncr {
            key: b"c".to_vec(),
            delta: 2,
        }))
        .await?
    {
        Response::Ok(reply) => assert_eq!(reply.value, wire::ReplyValue::Counter { value: 2 }),
        other => panic!("{other:?}"),
    }
    raw.close().await;
    still_serving(&cluster, US).await?;
    cluster.shutdown().await
}

/// Authentication: a wrong token, no token, a garbage, oversized,
/// truncated or empty hello, a request instead of a hello, silence, and certificates of another CA
/// (either side) are all refused, the token cases with `Unauthorized`; no
/// refused connection can send requests; the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unauthenticated_clients_are_refused_and_the_node_keeps_serving() -> Result<()> {
    let cluster = InProcessCluster::start(Spec::new(31)).await?;
    cluster.wait_connected().await;
    let config = cluster.dir.client_config()?;
    let identity = Identity::of(&config);
    let address = cluster.node(US).addresses.client;

    // The real client with a wrong token.
    let mut wrong = config.clone().pinned(US);
    wrong.token = "0".repeat(64);
    let e = Client::connect(wrong).await.unwrap_err();
    assert!(
        matches!(&e, Error::Unauthorized(m) if m.contains("wrong access token")),
        "{e:?}"
    );
    assert!(e.is_definite());

    // Raw hellos.
    let unauthorized = |reply: HelloReply, mention: &str| match reply {
        HelloReply::Refused(WireError::Unauthorized { message }) => {
            assert!(
                message.contains(mention),
                "{message:?} does not mention {mention:?}"
            )
        }
        other => panic!("expected Unauthorized ({mention}), got {other:?}"),
    };
    for (token, mention) in [
        (&b""[..], "no access token"),
        (b"not-the-token", "wrong access token"),
    ] {
        let raw = RawConnection::connect(address, US, &identity).await?;
        unauthorized(raw.hello(token).await?, mention);
        // Refused means closed: no request gets through.
        let after = raw
            .request(&request(Operation::CounterIncr {
                key: b"c".to_vec(),
                delta: 1,
            }))
            .await;
        assert!(after.is_err(), "{after:?}");
        raw.close().await;
    }
    let raw = RawConnection::connect(address, US, &identity).await?;
    // Bytes the decoder refuses (random bytes that decode as a hello are a hello).
    let junk = std::iter::repeat_with(meridian::marker)
        .find(|b| wire::decode::<wire::Hello>(b).is_err())
        .expect("random bytes are almost never a hello");
    let mut garbage = 32u32.to_le_bytes().to_vec();
    garbage.extend_from_slice(&junk);
    unauthorized(
        wire::decode(&raw.exchange(&garbage).await?)?,
        "malformed hello",
    );
    raw.close().await;
    let raw = RawConnection::connect(address, US, &identity).await?;
    let first = wire::encode(&request(Operation::CounterIncr {
        key: b"c".to_vec(),
        delta: 1,
    }));
    unauthorized(
        wire::decode(&raw.exchange(&first).await?)?,
        "malformed hello",
    );
    raw.close().await;
    // A hello over its size limit, one cut short, and none on the stream.
    let hello = wire::encode(&wire::Hello {
        version: wire::PROTOCOL_VERSION,
        token: config.token.clone().into_bytes(),
    });
    for frame in [
        &(1u32 << 20).to_le_bytes()[..],
        &hello[..hello.len() - 5],
        &[],
    ] {
        let raw = RawConnection::connect(address, US, &identity).await?;
        unauthorized(
            wire::decode(&raw.exchange(frame).await?)?,
            "bad hello frame",
        );
        raw.close().await;
    }

    // Certificates of another cluster's CA.
    let other = TestClusterFiles::create(Spec::new(32))?;
    let mut foreign = other.client_config()?;
    foreign.nodes = config.nodes.clone();
    let e = Client::connect(foreign.clone().pinned(US))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    // Trusting this cluster's CA, with its token, but the other client
    // certificate: the node refuses the handshake.
    let mut mixed = config.clone().pinned(US);
    mixed.cert_pem = foreign.cert_pem.clone();
    mixed.key_pem = foreign.key_pem.clone();
    let e = Client::connect(mixed.clone()).await.unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    let raw = RawConnection::connect(address, US, &Identity::of(&mixed)).await;
    let refused = match raw {
        Err(_) => true,
        // TLS 1.3: the client may finish before the server checks its
        // certificate; then the connection dies at the first exchange.
        Ok(raw) => raw.hello(config.token.as_bytes()).await.is_err(),
    };
    assert!(refused, "a client certificate of another CA was accepted");

    // Silence: no hello at all; the node closes the connection.
    let raw = RawConnection::connect(address, US, &identity).await?;
    let closed = tokio::time::timeout(Duration::from_secs(30), raw.connection.closed()).await;
    assert!(closed.is_ok(), "a connection without a hello stayed open");

    still_serving(&cluster, US).await?;
    still_serving(&cluster, EU).await?;
    cluster.shutdown().await
}
