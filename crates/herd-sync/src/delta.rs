//! rsync's delta transfer for a changed file (fast_rsync: rolling checksum and MD4 blocks):
//! the receiver sends a signature of its old copy, the sender answers with a delta against it,
//! and the receiver rebuilds the new file from its old one. MD4 is weak, so the sender also
//! sends the new content's BLAKE3, and a rebuilt file that does not match it is an error.

use std::io::{self, Read, Write};

use fast_rsync::{diff, Signature, SignatureOptions};

/// Files smaller than this travel whole (the signature round trip costs more than it saves).
pub const MIN: u64 = 64 * 1024;
/// Files larger than this travel whole (a delta holds both versions in memory).
pub const MAX: u64 = 2 << 30;

/// Whether a file of `size` with an old copy of `basis` bytes goes as a delta.
pub fn worth_it(size: u64, basis: u64) -> bool {
    (MIN..=MAX).contains(&size) && (MIN..=MAX).contains(&basis)
}

/// Signature blocks of about √size bytes (at least 704, as rsync; at most 128 KiB).
fn block_size(len: u64) -> u32 {
    let root = (len as f64).sqrt() as u32;
    (root / 8 * 8).clamp(704, 128 * 1024)
}

/// The signature of an old copy of `len` bytes, read from `old` a few MiB at a time (never
/// held whole).
pub fn signature(mut old: impl Read, len: u64) -> io::Result<Vec<u8>> {
    let options = SignatureOptions {
        block_size: block_size(len),
        crypto_hash_size: 8,
    };
    // Whole blocks per chunk: the signature of the chunks, joined, is the signature of all.
    let chunk = (4 << 20) / options.block_size as usize * options.block_size as usize;
    let mut buf = Vec::with_capacity(chunk);
    let mut out = Vec::new();
    loop {
        buf.clear();
        (&mut old).take(chunk as u64).read_to_end(&mut buf)?;
        if buf.is_empty() && !out.is_empty() {
            return Ok(out);
        }
        let sig = Signature::calculate(&buf, options).into_serialized();
        // The 12-byte header (magic, block size, hash size) once.
        out.extend_from_slice(if out.is_empty() { &sig } else { &sig[12..] });
        if buf.len() < chunk {
            return Ok(out);
        }
    }
}

/// Why a delta could not be made or applied.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("a malformed signature")]
    Signature,
    #[error("delta: {0}")]
    Diff(#[from] fast_rsync::DiffError),
    /// The delta's commands do not make sense (a peer's bytes).
    #[error("delta: {0}")]
    Malformed(String),
    #[error("old copy: {0}")]
    OldCopy(io::Error),
    /// Where the new content goes.
    #[error("{0}")]
    Write(io::Error),
    #[error("the delta did not rebuild the file (its hash differs)")]
    Hash,
}

/// The delta from the old copy behind `signature` to `new`.
pub fn delta(signature: Vec<u8>, new: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let sig = Signature::deserialize(signature).map_err(|_| DeltaError::Signature)?;
    let mut out = Vec::new();
    diff(&sig.index(), new, &mut out)?;
    Ok(out)
}

/// librsync's delta commands (what fast_rsync writes).
const DELTA_MAGIC: u32 = 0x7273_0236;
const OP_END: u8 = 0x00;
const OP_LITERAL_64: u8 = 0x40;
const OP_LITERAL_N8: u8 = 0x44;
const OP_COPY_N1_N1: u8 = 0x45;
const OP_COPY_N8_N8: u8 = 0x54;

fn bad(what: &str) -> DeltaError {
    DeltaError::Malformed(what.to_string())
}

/// The next `n` bytes of `d`.
fn take<'a>(d: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], DeltaError> {
    if d.len() < n {
        return Err(bad(&format!("truncated {what}")));
    }
    let (head, rest) = d.split_at(n);
    *d = rest;
    Ok(head)
}

/// A big-endian number of `n` bytes.
fn int(d: &mut &[u8], n: usize, what: &str) -> Result<u64, DeltaError> {
    Ok(take(d, n, what)?
        .iter()
        .fold(0u64, |acc, &x| acc << 8 | u64::from(x)))
}

/// The new content as it is rebuilt: counted, hashed, written.
struct Rebuilt<'a> {
    out: &'a mut dyn Write,
    hasher: blake3::Hasher,
    written: u64,
    size: u64,
}

impl Rebuilt<'_> {
    fn room(&self, n: u64) -> Result<(), DeltaError> {
        if self.written + n > self.size {
            return Err(bad("it writes more than the file's size"));
        }
        Ok(())
    }

    fn emit(&mut self, data: &[u8]) -> Result<(), DeltaError> {
        self.room(data.len() as u64)?;
        self.written += data.len() as u64;
        self.hasher.update(data);
        self.out.write_all(data).map_err(DeltaError::Write)
    }
}

/// Rebuilds the new content into `out` from the old copy `old` (read at the offsets the delta
/// copies from, never held whole) and `delta`. `size` and `hash` (BLAKE3) are the new
/// content's: a delta that writes more, less or other bytes is an error (and whatever went to
/// `out` must be thrown away).
pub fn patch(
    old: &std::fs::File,
    delta: &[u8],
    size: u64,
    hash: &[u8; 32],
    out: &mut dyn Write,
) -> Result<(), DeltaError> {
    use std::os::unix::fs::FileExt;
    let old_len = old.metadata().map_err(DeltaError::OldCopy)?.len();
    let d = &mut &delta[..];
    if int(d, 4, "magic")? != u64::from(DELTA_MAGIC) {
        return Err(bad("not an rsync delta"));
    }
    let mut new = Rebuilt {
        out,
        hasher: blake3::Hasher::new(),
        written: 0,
        size,
    };
    let mut buf = Vec::new();
    loop {
        let op = take(d, 1, "command")?[0];
        match op {
            OP_END => break,
            1..=OP_LITERAL_N8 => {
                let n = if op <= OP_LITERAL_64 {
                    u64::from(op)
                } else {
                    int(d, 1 << (op - OP_LITERAL_64 - 1), "literal length")?
                };
                new.room(n)?;
                new.emit(take(d, n as usize, "literal")?)?;
            }
            OP_COPY_N1_N1..=OP_COPY_N8_N8 => {
                let mode = op - OP_COPY_N1_N1;
                let mut at = int(d, 1 << (mode / 4), "copy offset")?;
                let mut len = int(d, 1 << (mode % 4), "copy length")?;
                if len == 0 || at.checked_add(len).is_none_or(|end| end > old_len) {
                    return Err(bad("a copy outside the old copy"));
                }
                new.room(len)?;
                while len > 0 {
                    let n = len.min(1 << 20) as usize;
                    buf.resize(n, 0);
                    old.read_exact_at(&mut buf, at)
                        .map_err(DeltaError::OldCopy)?;
                    new.emit(&buf)?;
                    at += n as u64;
                    len -= n as u64;
                }
            }
            _ => return Err(bad(&format!("unknown command {op:#04x}"))),
        }
    }
    if !d.is_empty() {
        return Err(bad("data after its end"));
    }
    if new.written != size || new.hasher.finalize().as_bytes() != hash {
        return Err(DeltaError::Hash);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: u32, seed: u32) -> Vec<u8> {
        (0..n)
            .map(|i| (i.wrapping_add(seed).wrapping_mul(2654435761) >> 13) as u8)
            .collect()
    }

    fn file(content: &[u8]) -> std::fs::File {
        let mut f = tempfile_in_tmp();
        f.write_all(content).unwrap();
        f
    }

    fn tempfile_in_tmp() -> std::fs::File {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "herd-delta-test.{}.{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&p)
            .unwrap();
        std::fs::remove_file(&p).unwrap();
        f
    }

    #[test]
    fn a_signature_read_in_chunks_is_the_signature_of_the_whole() {
        // Several 4 MiB chunks and a partial last block.
        for len in [0u32, 100, 70_000, 9_000_001] {
            let old = data(len, 1);
            let whole = Signature::calculate(
                &old,
                SignatureOptions {
                    block_size: block_size(len.into()),
                    crypto_hash_size: 8,
                },
            )
            .into_serialized();
            assert_eq!(
                signature(&old[..], len.into()).unwrap(),
                whole,
                "{len} bytes"
            );
        }
    }

    #[test]
    fn a_small_change_travels_as_a_small_delta_and_rebuilds_exactly() {
        let old = data(6_000_000, 0);
        let mut new = old.clone();
        new[1_000_000..1_060_000].fill(7); // 1 % changed
        new.extend_from_slice(b"appended");
        new.drain(5_000_000..5_000_100);
        let d = delta(signature(&old[..], old.len() as u64).unwrap(), &new).unwrap();
        assert!(
            d.len() < new.len() / 30,
            "delta {} of {}",
            d.len(),
            new.len()
        );
        // Rebuilt from the old file like fast_rsync's own apply would.
        let mut expect = Vec::new();
        fast_rsync::apply(&old, &d, &mut expect).unwrap();
        assert_eq!(expect, new);
        let hash = *blake3::hash(&new).as_bytes();
        let basis = file(&old);
        let mut out = Vec::new();
        patch(&basis, &d, new.len() as u64, &hash, &mut out).unwrap();
        assert_eq!(out, new);
        // A wrong hash or size, or a damaged delta, is refused.
        assert!(patch(&basis, &d, new.len() as u64, &[0; 32], &mut Vec::new()).is_err());
        assert!(patch(&basis, &d, new.len() as u64 - 1, &hash, &mut Vec::new()).is_err());
        assert!(patch(&basis, &d, new.len() as u64 + 1, &hash, &mut Vec::new()).is_err());
        assert!(patch(
            &basis,
            &d[..d.len() - 1],
            new.len() as u64,
            &hash,
            &mut Vec::new()
        )
        .is_err());
        let mut trailing = d.clone();
        trailing.push(0);
        assert!(patch(&basis, &trailing, new.len() as u64, &hash, &mut Vec::new()).is_err());
        // A copy beyond the old file's end.
        let mut oob = DELTA_MAGIC.to_be_bytes().to_vec();
        oob.extend([OP_COPY_N8_N8]);
        oob.extend((old.len() as u64 - 10).to_be_bytes());
        oob.extend(20u64.to_be_bytes());
        oob.push(OP_END);
        let e = patch(&basis, &oob, 20, &hash, &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside"), "{e}");
        assert!(delta(vec![1, 2, 3], &new).is_err());
    }
}
