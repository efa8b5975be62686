//! A fake Meridian node for the client's tests: the real client protocol
//! (QUIC, mutual TLS with certificates from a throw-away CA, Hello, one
//! stream per request) in front of a tiny in-memory map, with hooks to
//! inject faults: delay or withhold a response, answer an error, drop the
//! connection, answer garbage.
//!
//! Only binds 127.0.0.1. Every server task stops when the server is dropped
//! (its endpoint closes) or when the test's runtime ends.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_client::ClientConfig;
use meridian_client::config::NodeEntry;
use meridian_client::wire::{
    self, Hello, HelloReply, Kind, NodeStatus, Operation, Reply, ReplyValue, Request, Response,
    WireError, WireHlc,
};
use quinn::crypto::rustls::QuicServerConfig;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::Notify;

/// The token every fake server accepts.
pub const TOKEN: &str = "test-token";

/// Longest a fake server withholds a response when told to hang: longer
/// than any client deadline in the tests, short enough that a leaked task
/// ends by itself.
const HANG: Duration = Duration::from_secs(30);

/// A throw-away cluster CA that issues node and client certificates.
pub struct Pki {
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its private key, PEM.
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Pki {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self, dns_name: &str, usage: ExtendedKeyUsagePurpose) -> Identity {
        let mut params = CertificateParams::new(vec![dns_name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, dns_name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A node certificate for DNS name `name`.
    pub fn node(&self, name: &str) -> Identity {
        self.issue(name, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate.
    pub fn client(&self) -> Identity {
        self.issue("meridian-client", ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client configuration for `nodes` with this CA and a fresh client
    /// certificate.
    pub fn client_config(&self, nodes: Vec<NodeEntry>) -> ClientConfig {
        let id = self.client();
        ClientConfig::new(nodes, self.ca_pem.clone(), id.cert_pem, id.key_pem, TOKEN)
    }
}

/// What the server does with one request.
#[derive(Clone)]
pub enum Action {
    /// Apply it and answer.
    Serve,
    /// Wait until notified, then apply and answer.
    WaitFor(Arc<Notify>),
    /// Answer this error without applying anything.
    Fail(WireError),
    /// Close the whole connection instead of answering (after the request
    /// was received, and applied if `apply`).
    Drop { apply: bool },
    /// Never answer (until [`HANG`] passes).
    Hang,
    /// Answer bytes that are not a response.
    Garbage,
}

type Hook = Arc<dyn Fn(&Request) -> Action + Send + Sync>;

struct State {
    name: String,
    data: Mutex<HashMap<(Kind, Vec<u8>), Value>>,
    received: Mutex<Vec<Request>>,
    hook: Mutex<Option<Hook>>,
    /// When set, Hello is answered with this refusal.
    refuse_hello: Mutex<Option<WireError>>,
    connections: AtomicUsize,
    live: Mutex<Vec<quinn::Connection>>,
    clock: AtomicUsize,
}

#[derive(Clone)]
enum Value {
    Counter(i64),
    Set(BTreeSet<Vec<u8>>),
    Register(Option<Vec<u8>>, Option<WireHlc>),
    Map(std::collections::BTreeMap<Vec<u8>, Vec<u8>>),
}

/// A fake node listening on 127.0.0.1.
pub struct FakeServer {
    pub addr: SocketAddr,
    endpoint: quinn::Endpoint,
    state: Arc<State>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"server dropped");
    }
}

impl FakeServer {
    /// Starts a node named `name` with a certificate from `pki`, trusting
    /// client certificates from `pki`.
    pub fn start(name: &str, pki: &Pki) -> FakeServer {
        FakeServer::start_with(name, &pki.node(name), pki)
    }

    /// Starts a node presenting `identity` and trusting clients of `clients`.
    pub fn start_with(name: &str, identity: &Identity, clients: &Pki) -> FakeServer {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(clients.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let chain = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).unwrap();
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        tls.alpn_protocols = vec![wire::ALPN.to_vec()];
        let crypto = QuicServerConfig::try_from(tls).unwrap();
        // quinn's defaults: 100 concurrent bidirectional streams per
        // connection, so 200 concurrent requests exercise the wait for a
        // free stream.
        let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
        let state = Arc::new(State {
            name: name.to_owned(),
            data: Mutex::default(),
            received: Mutex::default(),
            hook: Mutex::default(),
            refuse_hello: Mutex::default(),
            connections: AtomicUsize::new(0),
            live: Mutex::default(),
            clock: AtomicUsize::new(0),
        });
        let server = FakeServer {
            addr: endpoint.local_addr().unwrap(),
            endpoint: endpoint.clone(),
            state: state.clone(),
        };
        tokio::spawn(accept_loop(endpoint, state));
        server
    }

    /// This node's entry for a client configuration.
    pub fn entry(&self) -> NodeEntry {
        NodeEntry {
            name: self.state.name.clone(),
            region: format!("{}-region", self.state.name),
            address: self.addr.to_string(),
            resp: None,
        }
    }

    /// Decides what happens to each request from now on.
    pub fn on_request(&self, hook: impl Fn(&Request) -> Action + Send + Sync + 'static) {
        *self.state.hook.lock().unwrap() = Some(Arc::new(hook));
    }

    /// Refuses every new connection's Hello with `error`.
    pub fn refuse_hello(&self, error: WireError) {
        *self.state.refuse_hello.lock().unwrap() = Some(error);
    }

    /// Every request received in full, in order.
    pub fn received(&self) -> Vec<Request> {
        self.state.received.lock().unwrap().clone()
    }

    /// How many received requests match `pred`.
    pub fn received_where(&self, pred: impl Fn(&Operation) -> bool) -> usize {
        self.received().iter().filter(|r| pred(&r.op)).count()
    }

    /// How many connections completed the QUIC handshake.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Closes every open connection (as a node restart would).
    pub fn disconnect_all(&self) {
        for conn in self.state.live.lock().unwrap().drain(..) {
            conn.close(1u32.into(), b"disconnected by test");
        }
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, state: Arc<State>) {
    while let Some(incoming) = endpoint.accept().await {
        let state = state.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            state.connections.fetch_add(1, Ordering::SeqCst);
            state.live.lock().unwrap().push(conn.clone());
            serve_connection(conn, state).await;
        });
    }
}

async fn serve_connection(conn: quinn::Connection, state: Arc<State>) {
    // Hello.
    let Ok((mut send, mut recv)) = conn.accept_bi().await else {
        return;
    };
    let Some(hello) = read_frame::<Hello>(&mut recv).await else {
        return;
    };
    let refusal = state.refuse_hello.lock().unwrap().clone();
    let reply = match refusal {
        Some(e) => HelloReply::Refused(e),
        None if hello.token != TOKEN.as_bytes() => HelloReply::Refused(WireError::Unauthorized {
            message: "wrong access token".into(),
        }),
        None if hello.version != wire::PROTOCOL_VERSION => {
            HelloReply::Refused(WireError::InvalidArgument {
                message: format!("unsupported version {}", hello.version),
            })
        }
        None => HelloReply::Ok {
            node: state.name.clone(),
            region: format!("{}-region", state.name),
        },
    };
    let refused = matches!(reply, HelloReply::Refused(_));
    if send.write_all(&wire::encode(&reply)).await.is_err() || send.finish().is_err() {
        return;
    }
    if refused {
        // Let the refusal reach the client (it closes); closing at once
        // could discard the unsent reply.
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        conn.close(2u32.into(), b"refused");
        return;
    }
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(serve_stream(conn.clone(), state.clone(), send, recv));
    }
}

async fn serve_stream(
    conn: quinn::Connection,
    state: Arc<State>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let Some(request) = read_frame::<Request>(&mut recv).await else {
        return;
    };
    state.received.lock().unwrap().push(request.clone());
    let hook = state.hook.lock().unwrap().clone();
    let action = hook.map_or(Action::Serve, |h| h(&request));
    let response = match action {
        Action::Serve => state.apply(&request),
        Action::WaitFor(notify) => {
            notify.notified().await;
            state.apply(&request)
        }
        Action::Fail(e) => Response::Err(e),
        Action::Drop { apply } => {
            if apply {
                state.apply(&request);
            }
            conn.close(3u32.into(), b"dropped by test");
            return;
        }
        Action::Hang => {
            tokio::time::sleep(HANG).await;
            return;
        }
        Action::Garbage => {
            let garbage = [4u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
            let _ = send.write_all(&garbage).await;
            let _ = send.finish();
            return;
        }
    };
    let _ = send.write_all(&wire::encode(&response)).await;
    let _ = send.finish();
}

async fn read_frame<T>(recv: &mut quinn::RecvStream) -> Option<T>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix).await.ok()?;
    let len = wire::frame_len(prefix, wire::MAX_FRAME_BYTES).ok()?;
    let mut payload = vec![0u8; len];
    recv.read_exact(&mut payload).await.ok()?;
    wire::decode(&payload).ok()
}

impl State {
    fn apply(&self, request: &Request) -> Response {
        let mut data = self.data.lock().unwrap();
        let value = match &request.op {
            Operation::CounterIncr { key, delta } => {
                let v = data
                    .entry((Kind::Counter, key.clone()))
                    .or_insert(Value::Counter(0));
                if let Value::Counter(n) = v {
                    *n += delta;
                }
                v.clone()
            }
            Operation::CounterRead { key } => data
                .get(&(Kind::Counter, key.clone()))
                .cloned()
                .unwrap_or(Value::Counter(0)),
            Operation::SetAdd { key, members } | Operation::SetRemove { key, members } => {
                let v = data
                    .entry((Kind::Set, key.clone()))
                    .or_insert(Value::Set(BTreeSet::new()));
                if let Value::Set(set) = v {
                    for m in members {
                        if matches!(request.op, Operation::SetAdd { .. }) {
                            set.insert(m.clone());
                        } else {
                            set.remove(m);
                        }
                    }
                }
                v.clone()
            }
            Operation::SetRead { key } => data
                .get(&(Kind::Set, key.clone()))
                .cloned()
                .unwrap_or(Value::Set(BTreeSet::new())),
            Operation::RegisterPut { key, value }
            | Operation::RegisterPutTtl { key, value, .. } => {
                let hlc = self.tick();
                let v = Value::Register(Some(value.clone()), Some(hlc));
                data.insert((Kind::Register, key.clone()), v.clone());
                v
            }
            Operation::RegisterGet { key } => data
                .get(&(Kind::Register, key.clone()))
                .cloned()
                .unwrap_or(Value::Register(None, None)),
            Operation::Delete { kind, key } => {
                let v = match kind {
                    Kind::Counter => Value::Counter(0),
                    Kind::Set => Value::Set(BTreeSet::new()),
                    Kind::Register => Value::Register(None, Some(self.tick())),
                    Kind::Map => Value::Map(Default::default()),
                };
                data.insert((*kind, key.clone()), v.clone());
                v
            }
            Operation::MapSet { key, .. }
            | Operation::MapIncr { key, .. }
            | Operation::MapRemove { key, .. } => {
                let v = data
                    .entry((Kind::Map, key.clone()))
                    .or_insert(Value::Map(Default::default()));
                if let Value::Map(map) = v {
                    match &request.op {
                        Operation::MapSet { pairs, .. } => map.extend(pairs.iter().cloned()),
                        Operation::MapIncr { field, delta, .. } => {
                            let old: i64 = map
                                .get(field)
                                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                                .unwrap_or(0);
                            map.insert(field.clone(), (old + delta).to_string().into_bytes());
                        }
                        Operation::MapRemove { fields, .. } => {
                            for f in fields {
                                map.remove(f);
                            }
                        }
                        _ => unreachable!(),
                    }
                }
                v.clone()
            }
            Operation::MapRead { key } => data
                .get(&(Kind::Map, key.clone()))
                .cloned()
                .unwrap_or(Value::Map(Default::default())),
            // Expiry: this fake keeps no TTLs; it answers with presence.
            Operation::Expire { kind, key, .. }
            | Operation::Persist { kind, key }
            | Operation::Ttl { kind, key } => {
                let exists = data.contains_key(&(*kind, key.clone()));
                return self.reply(
                    request,
                    ReplyValue::Ttl {
                        exists,
                        deadline_ms: None,
                        remaining_ms: None,
                    },
                );
            }
            // The RESP door's type check; the client API never sends it.
            Operation::Probe { .. } => {
                return self.reply(
                    request,
                    ReplyValue::Probe {
                        register: None,
                        counter: 0,
                        set_count: 0,
                        members_present: Vec::new(),
                        map_count: 0,
                        map_values: Vec::new(),
                    },
                );
            }
            Operation::Status => {
                return self.reply(
                    request,
                    ReplyValue::Status(NodeStatus {
                        node: self.name.clone(),
                        region: format!("{}-region", self.name),
                        incarnation: 1,
                        uptime_ms: 1000,
                        log_bytes: 0,
                        deltas_originated: 0,
                        deltas_applied: 0,
                        peers: Vec::new(),
                    }),
                );
            }
            Operation::DebugClockOffset { .. } => return self.reply(request, ReplyValue::Done),
            // The RESP door's type check; the client API never sends it.
            Operation::Inspect { .. } => {
                return self.reply(
                    request,
                    ReplyValue::Inspect {
                        register: None,
                        counter: 0,
                        set_count: 0,
                        members_present: Vec::new(),
                    },
                );
            }
            // One page holding every key with the prefix.
            Operation::Scan { prefix, .. } => {
                let keys = data
                    .keys()
                    .filter(|(_, k)| k.starts_with(prefix))
                    .map(|(kind, key)| wire::ScanKey {
                        kind: *kind,
                        key: key.clone(),
                    })
                    .collect();
                return self.reply(request, ReplyValue::Keys { keys, cursor: None });
            }
            // One page holding every member after `after`.
            Operation::SetPage { key, after, .. } => {
                let members = match data.get(&(Kind::Set, key.clone())) {
                    Some(Value::Set(set)) => set
                        .iter()
                        .filter(|m| after.as_ref().is_none_or(|a| *m > a))
                        .cloned()
                        .collect(),
                    _ => Vec::new(),
                };
                return self.reply(
                    request,
                    ReplyValue::SetPage {
                        members,
                        next: None,
                    },
                );
            }
        };
        let value = match value {
            Value::Counter(value) => ReplyValue::Counter { value },
            Value::Set(set) => ReplyValue::Set {
                count: set.len() as u64,
                members: set.into_iter().collect(),
            },
            Value::Register(value, hlc) => ReplyValue::Register { value, hlc },
            Value::Map(map) => ReplyValue::Map {
                count: map.len() as u64,
                fields: map.into_iter().collect(),
            },
        };
        self.reply(request, value)
    }

    fn reply(&self, request: &Request, value: ReplyValue) -> Response {
        Response::Ok(Reply {
            node: self.name.clone(),
            consistency: request.consistency,
            value,
        })
    }

    fn tick(&self) -> WireHlc {
        WireHlc {
            time: self.clock.fetch_add(1, Ordering::SeqCst) as u64 + 1,
            node: 7,
        }
    }
}

/// An address on 127.0.0.1 where nothing listens (a port that was free a
/// moment ago).
pub fn dead_address() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}
