//! The signing path: CSR parse + proof-of-possession check + certificate build +
//! sign + DER encode, as one issuance does it (no I/O).
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tessera_ca::ca::{self, KeyAlgorithm, LeafSpec, SigningCa};
use tessera_core::{SpiffeId, TrustDomain};

/// A CSR (PEM) for a fresh P-256 key, as a workload sends it.
fn csr() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let td = TrustDomain::new("example.org").unwrap();
    let now = tessera_core::now_unix();
    let mut g = c.benchmark_group("issue");
    g.throughput(Throughput::Elements(1));
    for alg in [
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::Ed25519,
    ] {
        let (cert, key) = ca::new_root(&td, "bench", alg, now, 86400 * 365).unwrap();
        let signing = SigningCa::load("bench", cert, vec![], &key).unwrap();
        let csr = csr();
        let id = SpiffeId::new("spiffe://example.org/ns/prod/web").unwrap();
        let dns = vec!["web.internal".to_owned()];
        g.bench_function(format!("csr_to_cert/{}", alg.as_str()), |b| {
            b.iter(|| {
                let v = tessera_ca::csr::verify(black_box(csr.as_bytes()), 16384).unwrap();
                let spec = LeafSpec {
                    spiffe_id: &id,
                    dns_names: &dns,
                    ip_addrs: &[],
                    ttl_seconds: 3600,
                    skew_seconds: 30,
                    attestation_hash: Some([7; 32]),
                };
                black_box(signing.sign_leaf(&spec, &v.public_key, now).unwrap())
            })
        });
    }
    let csr = csr();
    g.bench_function("csr_verify_only/ecdsa-p256", |b| {
        b.iter(|| black_box(tessera_ca::csr::verify(black_box(csr.as_bytes()), 16384).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
