//! The audit log's hash chain: each record's hash covers the previous hash and
//! every field, so the CA's store writes it and any client (`tessera audit
//! verify`) can check it from the records alone.

use crate::api::AuditRecord;

/// The audit-record hash: SHA-256 over the previous hash and every field, each
/// length-prefixed so no two records can encode alike.
pub fn record_hash(
    prev_hash: &[u8; 32],
    seq: i64,
    at: i64,
    actor: &str,
    action: &str,
    target: &str,
    details: &str,
) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"tessera-audit-v1");
    ctx.update(prev_hash);
    ctx.update(&seq.to_be_bytes());
    ctx.update(&at.to_be_bytes());
    for field in [actor, action, target, details] {
        ctx.update(&(field.len() as u64).to_be_bytes());
        ctx.update(field.as_bytes());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Checks a run of audit records: each hash recomputes and each links to the one
/// before. `prev` is the hash before the first record (zeros for seq 1).
/// Returns the sequence number of the first bad record.
pub fn verify_chain(prev: [u8; 32], records: &[AuditRecord]) -> Result<[u8; 32], i64> {
    let mut prev = prev;
    for r in records {
        let want_prev = hex::encode(prev);
        let h = record_hash(
            &prev, r.seq, r.at, &r.actor, &r.action, &r.target, &r.details,
        );
        if r.prev_hash != want_prev || r.hash != hex::encode(h) {
            return Err(r.seq);
        }
        prev = h;
    }
    Ok(prev)
}
