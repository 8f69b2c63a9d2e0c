//! An in-process DNS server (hickory-server) serving zones given as text,
//! on a loopback address; names can be made to answer SERVFAIL.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::Name;
use hickory_server::proto::serialize::txt::Parser;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, MessageResponseBuilder, ZoneType};

type Provider = hickory_server::net::runtime::TokioRuntimeProvider;

/// A zone from text (records only, or a full zone file).
fn zone(
    origin: &str,
    text: &str,
    nx: Option<hickory_server::dnssec::NxProofKind>,
) -> InMemoryZoneHandler<Provider> {
    let origin = Name::from_str(origin).unwrap();
    let (origin, records) = Parser::new(text, None, Some(origin))
        .parse()
        .unwrap_or_else(|e| panic!("zone: {e}"));
    InMemoryZoneHandler::<Provider>::new(origin, records, ZoneType::Primary, AxfrPolicy::Deny, nx)
        .unwrap()
}

/// Answers from the catalog, except SERVFAIL for the names in `servfail`.
struct Handler {
    catalog: Catalog,
    servfail: Arc<Mutex<HashSet<String>>>,
    asked: Arc<Mutex<HashMap<String, u32>>>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: hickory_server::net::runtime::Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let name = request
            .queries
            .queries()
            .first()
            .map(|q| q.name().to_string().to_ascii_lowercase());
        let name = name
            .map(|n| n.trim_end_matches('.').to_owned())
            .unwrap_or_default();
        *self.asked.lock().unwrap().entry(name.clone()).or_insert(0) += 1;
        let failing = self.servfail.lock().unwrap().contains(&name);
        if failing {
            let msg = MessageResponseBuilder::new(&request.queries, None)
                .error_msg(&request.metadata, ResponseCode::ServFail);
            return response.send_response(msg).await.expect("send SERVFAIL");
        }
        self.catalog.handle_request::<R, T>(request, response).await
    }
}

/// A running DNS server.
pub struct TestDns {
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    servfail: Arc<Mutex<HashSet<String>>>,
    asked: Arc<Mutex<HashMap<String, u32>>>,
    server: hickory_server::Server<Handler>,
}

impl TestDns {
    /// Serves `zones` (origin, zone-file text) on `ip`, on a free port.
    pub async fn start(ip: IpAddr, zones: &[(&str, &str)]) -> Self {
        Self::start_at(SocketAddr::new(ip, 0), zones).await
    }

    /// Serves `zones` on `addr` (UDP and TCP); port 0 picks a free port.
    pub async fn start_at(addr: SocketAddr, zones: &[(&str, &str)]) -> Self {
        let zones = zones.iter().map(|(o, t)| zone(o, t, None)).collect();
        Self::serve(addr, zones).await
    }

    /// Serves zone `origin` from `text`, DNSSEC-signed (ECDSA P-256, NSEC)
    /// with a fresh key, on `ip`; then `tamper` records replace theirs
    /// after signing (their signatures are gone: bogus answers). Returns
    /// the server and a trust-anchor line for the key (`[dns]
    /// trust_anchor`).
    pub async fn start_signed(
        ip: IpAddr,
        origin: &str,
        text: &str,
        tamper: &str,
    ) -> (Self, String) {
        use hickory_server::proto::dnssec::crypto::EcdsaSigningKey;
        use hickory_server::proto::dnssec::rdata::DNSKEY;
        use hickory_server::proto::dnssec::{Algorithm, DnssecSigner, PublicKey, SigningKey};
        let alg = Algorithm::ECDSAP256SHA256;
        let pkcs8 = EcdsaSigningKey::generate_pkcs8(alg).unwrap();
        let key = EcdsaSigningKey::from_pkcs8(&pkcs8, alg).unwrap();
        let public = key.to_public_key().unwrap();
        let dnskey = DNSKEY::from_key(&public);
        let anchor = {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(public.public_bytes());
            format!("{origin} 3600 IN DNSKEY {} 3 13 {b64}\n", dnskey.flags())
        };
        let name = Name::from_str(origin).unwrap();
        let signer = DnssecSigner::new(
            dnskey,
            Box::new(key),
            name.clone(),
            Duration::from_secs(86_400),
        );
        let mut z = zone(
            origin,
            text,
            Some(hickory_server::dnssec::NxProofKind::Nsec),
        );
        z.add_zone_signing_key_mut(signer).unwrap();
        z.secure_zone_mut().unwrap();
        if !tamper.is_empty() {
            let (_, records) = Parser::new(tamper, None, Some(name)).parse().unwrap();
            for (_, set) in records {
                for r in set.records_without_rrsigs() {
                    z.upsert_mut(r.clone(), 1_000);
                }
            }
        }
        let dns = Self::serve(SocketAddr::new(ip, 0), vec![z]).await;
        (dns, anchor)
    }

    async fn serve(addr: SocketAddr, zones: Vec<InMemoryZoneHandler<Provider>>) -> Self {
        let ip = addr.ip();
        let mut catalog = Catalog::new();
        for zone in zones {
            let origin = hickory_server::zone_handler::ZoneHandler::origin(&zone).clone();
            catalog.upsert(origin, vec![Arc::new(zone)]);
        }
        let servfail = Arc::new(Mutex::new(HashSet::new()));
        let asked = Arc::new(Mutex::new(HashMap::new()));
        let handler = Handler {
            catalog,
            servfail: servfail.clone(),
            asked: asked.clone(),
        };
        let mut server = hickory_server::Server::new(handler);
        // UDP and TCP on the same port (the resolver uses one port for both).
        let mut pair = None;
        for _ in 0..50 {
            let udp = tokio::net::UdpSocket::bind(addr).await.unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = tokio::net::TcpListener::bind((ip, port)).await {
                pair = Some((udp, tcp));
                break;
            }
        }
        let (udp, tcp) = pair.expect("a port free for both UDP and TCP");
        let addr = udp.local_addr().unwrap();
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 4096);
        Self {
            addr,
            servfail,
            asked,
            server,
        }
    }

    /// Makes `name` answer SERVFAIL (or stop doing so).
    pub fn servfail(&self, name: &str, on: bool) {
        let mut s = self.servfail.lock().unwrap();
        if on {
            s.insert(name.to_ascii_lowercase());
        } else {
            s.remove(&name.to_ascii_lowercase());
        }
    }

    /// How many queries (of any type) named `name`.
    pub fn asked(&self, name: &str) -> u32 {
        self.asked
            .lock()
            .unwrap()
            .get(&name.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        let _ = self.server.shutdown_gracefully().await;
    }
}
