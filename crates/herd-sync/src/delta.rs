//! rsync's delta transfer for a changed file (fast_rsync: rolling checksum and MD4 blocks):
//! the receiver sends a signature of its old copy, the sender answers with a delta against it,
//! and the receiver rebuilds the new file from its old one. MD4 is weak, so the sender also
//! sends the new content's BLAKE3, and a rebuilt file that does not match it is an error.

use fast_rsync::{apply_limited, diff, Signature, SignatureOptions};

/// Files smaller than this travel whole (the signature round trip costs more than it saves).
pub const MIN: u64 = 64 * 1024;
/// Files larger than this travel whole (a delta holds both versions in memory).
pub const MAX: u64 = 2 << 30;

/// Whether a file of `size` with an old copy of `basis` bytes goes as a delta.
pub fn worth_it(size: u64, basis: u64) -> bool {
    (MIN..=MAX).contains(&size) && (MIN..=MAX).contains(&basis)
}

/// The signature of an old copy. Blocks of about √size bytes (at least 700, as rsync).
pub fn signature(basis: &[u8]) -> Vec<u8> {
    let root = (basis.len() as f64).sqrt() as u32;
    let block_size = (root / 8 * 8).clamp(704, 128 * 1024);
    Signature::calculate(
        basis,
        SignatureOptions {
            block_size,
            crypto_hash_size: 8,
        },
    )
    .into_serialized()
}

/// The delta from the old copy behind `signature` to `new`.
pub fn delta(signature: Vec<u8>, new: &[u8]) -> Result<Vec<u8>, String> {
    let sig = Signature::deserialize(signature).map_err(|_| "a malformed signature".to_string())?;
    let mut out = Vec::new();
    diff(&sig.index(), new, &mut out).map_err(|e| format!("delta: {e}"))?;
    Ok(out)
}

/// Rebuilds the new content from the old copy and a delta; `size` and `hash` (BLAKE3) are the
/// new content's, and anything else is an error.
pub fn patch(basis: &[u8], delta: &[u8], size: u64, hash: &[u8; 32]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(size as usize);
    apply_limited(basis, delta, &mut out, size as usize).map_err(|e| format!("delta: {e}"))?;
    if out.len() as u64 != size || blake3::hash(&out).as_bytes() != hash {
        return Err("the delta did not rebuild the file (its hash differs)".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_change_travels_as_a_small_delta_and_rebuilds_exactly() {
        let old: Vec<u8> = (0..2_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut new = old.clone();
        new[1_000_000..1_020_000].fill(7); // 1 % changed
        new.extend_from_slice(b"appended");
        let d = delta(signature(&old), &new).unwrap();
        assert!(
            d.len() < new.len() / 30,
            "delta {} of {}",
            d.len(),
            new.len()
        );
        let hash = *blake3::hash(&new).as_bytes();
        assert_eq!(patch(&old, &d, new.len() as u64, &hash).unwrap(), new);
        // A wrong hash or size is refused.
        assert!(patch(&old, &d, new.len() as u64, &[0; 32]).is_err());
        assert!(patch(&old, &d, new.len() as u64 - 1, &hash).is_err());
        assert!(delta(vec![1, 2, 3], &new).is_err());
    }
}
