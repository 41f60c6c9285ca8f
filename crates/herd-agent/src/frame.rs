//! The agent's wire format: length-prefixed frames over TLS.
//!
//! ```text
//! +-----------------+--------+------------------+-------------------+
//! | length: u32 BE  | kind   | node: u32 BE     | payload           |
//! | (5 + payload)   | u8     | (rank in the run)| (≤ MAX_PAYLOAD)   |
//! +-----------------+--------+------------------+-------------------+
//! ```
//!
//! `node` says which node of the run a frame is about, so that a relay can carry a whole
//! subtree's frames over one connection. Control payloads (request, exit, error) are JSON;
//! data payloads (stdin, stdout, stderr) are raw bytes. A frame longer than `MAX_PAYLOAD`, an
//! unknown kind or a truncated frame is an error, and the connection is closed: there is no
//! resynchronising on a byte stream.

use std::fmt;
use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest payload a frame may carry.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Bytes before the payload.
pub const HEADER: usize = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Client → agent: a JSON [`crate::proto::Request`].
    Request = 1,
    /// Client → agent: bytes for the command's standard input.
    Stdin = 2,
    /// Client → agent: standard input ends.
    StdinEnd = 3,
    /// Client → agent: one byte, a signal for the command's process group.
    Signal = 4,
    /// Agent → client: the command's standard output.
    Stdout = 5,
    /// Agent → client: the command's standard error.
    Stderr = 6,
    /// Agent → client: JSON [`crate::proto::Exit`]; the node's last frame.
    Exit = 7,
    /// Agent → client: JSON [`crate::proto::Failure`]; the node's last frame.
    Error = 8,
    /// Agent → client: JSON [`crate::proto::Pong`].
    Pong = 9,
    /// Client → agent (sync): the source's manifest, JSON lines in chunks; an empty one ends it.
    Manifest = 10,
    /// Agent → client (sync): the paths it wants, one per line, in chunks; an empty one ends it.
    Want = 11,
    /// Client → agent (sync): a wanted file's content, in order; an empty frame ends each file.
    FileData = 12,
    /// Agent → client (sync): JSON [`crate::proto::SyncDone`]; the node's last frame.
    SyncDone = 13,
    /// Agent → client (sync): the signature of an old copy, for each file wanted as a delta,
    /// in chunks; an empty one ends each.
    Signature = 14,
    /// Client → agent (sync): the file whose content follows, as text: `F PATH` (whole) or
    /// `D HASH PATH` (a delta against the old copy whose signature has this BLAKE3); an empty
    /// one ends the files.
    FileStart = 15,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Request,
            2 => Kind::Stdin,
            3 => Kind::StdinEnd,
            4 => Kind::Signal,
            5 => Kind::Stdout,
            6 => Kind::Stderr,
            7 => Kind::Exit,
            8 => Kind::Error,
            9 => Kind::Pong,
            10 => Kind::Manifest,
            11 => Kind::Want,
            12 => Kind::FileData,
            13 => Kind::SyncDone,
            14 => Kind::Signature,
            15 => Kind::FileStart,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub node: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: Kind, node: u32, payload: impl Into<Vec<u8>>) -> Frame {
        Frame {
            kind,
            node,
            payload: payload.into(),
        }
    }

    /// A frame whose payload is `value` as JSON.
    pub fn json(kind: Kind, node: u32, value: &impl serde::Serialize) -> Frame {
        // Serialising plain structs of strings and numbers cannot fail.
        let payload = serde_json::to_vec(value).unwrap_or_default();
        Frame::new(kind, node, payload)
    }

    /// The payload read as JSON.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, FrameError> {
        serde_json::from_slice(&self.payload).map_err(|e| FrameError::Payload(e.to_string()))
    }

    /// Appends the encoded frame to `out`. Payloads over [`MAX_PAYLOAD`] are the caller's
    /// bug: split data before framing it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_header(self.kind, self.node, self.payload.len(), out);
        out.extend_from_slice(&self.payload);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length field says more than a frame may hold.
    TooLarge(usize),
    /// The length field says less than a header.
    TooShort(usize),
    UnknownKind(u8),
    /// The stream ended inside a frame.
    Truncated,
    /// A control payload that is not the JSON it should be.
    Payload(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge(n) => write!(f, "frame of {n} bytes (at most {MAX_PAYLOAD})"),
            FrameError::TooShort(n) => write!(f, "frame length {n} is shorter than its header"),
            FrameError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            FrameError::Truncated => f.write_str("the stream ended inside a frame"),
            FrameError::Payload(e) => write!(f, "bad message: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<FrameError> for io::Error {
    fn from(e: FrameError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Decodes one frame from the start of `buf`: the frame and the bytes it took, `None` if
/// more bytes are needed, or an error (checked as soon as the header is there, so a huge
/// length is refused before anything is buffered for it).
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(head) = buf.first_chunk::<HEADER>() else {
        return Ok(None);
    };
    let (kind, node, len) = decode_header(head)?;
    let Some(payload) = buf.get(HEADER..HEADER + len) else {
        return Ok(None);
    };
    Ok(Some((Frame::new(kind, node, payload), HEADER + len)))
}

/// A frame's header: its kind, node and payload length (checked).
pub fn decode_header(head: &[u8; HEADER]) -> Result<(Kind, u32, usize), FrameError> {
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len < 5 {
        return Err(FrameError::TooShort(len));
    }
    if len - 5 > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len - 5));
    }
    let kind = Kind::from_u8(head[4]).ok_or(FrameError::UnknownKind(head[4]))?;
    let node = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
    Ok((kind, node, len - 5))
}

/// Appends a frame header for a payload of `len` bytes (the payload follows).
pub fn encode_header(kind: Kind, node: u32, len: usize, out: &mut Vec<u8>) {
    debug_assert!(len <= MAX_PAYLOAD);
    out.extend_from_slice(&((5 + len) as u32).to_be_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&node.to_be_bytes());
}

/// Reads frames from a byte stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: Vec::with_capacity(16 * 1024),
            start: 0,
        }
    }

    /// The stream underneath, for a caller that takes over reading it (after
    /// [`FrameReader::take_buffered`]).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The bytes read from the stream and not yet decoded, taken out of the reader.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.start);
        self.buf.clear();
        self.start = 0;
        rest
    }

    /// The next frame; `None` at a clean end of stream (between frames).
    pub async fn read(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if let Some((frame, used)) = decode(&self.buf[self.start..])? {
                self.start += used;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                return Ok(Some(frame));
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            // Straight into the buffer's spare room (nothing zeroed, nothing copied).
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            let n = self.inner.read_buf(&mut self.buf).await?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated.into())
                };
            }
        }
    }
}

/// Writes `frames` and flushes.
pub async fn write_frames<W: AsyncWrite + Unpin>(w: &mut W, frames: &[Frame]) -> io::Result<()> {
    let mut out = Vec::with_capacity(frames.iter().map(|f| HEADER + f.payload.len()).sum());
    for f in frames {
        f.encode(&mut out);
    }
    w.write_all(&out).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn oversized_unknown_and_short_frames_are_errors() {
        let mut b = ((MAX_PAYLOAD + 6) as u32).to_be_bytes().to_vec();
        b.extend([1, 0, 0, 0, 0]);
        assert_eq!(decode(&b), Err(FrameError::TooLarge(MAX_PAYLOAD + 1)));
        assert_eq!(
            decode(&[0, 0, 0, 5, 99, 0, 0, 0, 0]),
            Err(FrameError::UnknownKind(99))
        );
        assert_eq!(
            decode(&[0, 0, 0, 4, 1, 0, 0, 0, 0]),
            Err(FrameError::TooShort(4))
        );
        assert_eq!(decode(&[0, 0, 0, 6, 1, 0, 0, 0]), Ok(None));
        assert_eq!(decode(&[0, 0, 0, 6, 1, 0, 0, 0, 7]), Ok(None));
    }

    #[tokio::test]
    async fn a_stream_ending_inside_a_frame_is_an_error() {
        let mut out = Vec::new();
        Frame::new(Kind::Stdout, 3, b"hello".to_vec()).encode(&mut out);
        let mut r = FrameReader::new(&out[..out.len() - 1]);
        assert!(r.read().await.is_err());
        let mut r = FrameReader::new(&out[..]);
        assert_eq!(r.read().await.unwrap().unwrap().payload, b"hello");
        assert!(r.read().await.unwrap().is_none());
    }

    proptest! {
        #[test]
        fn frames_round_trip_through_any_split(
            frames in proptest::collection::vec((1u8..=15, any::<u32>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..8),
            cut in 1usize..64,
        ) {
            let frames: Vec<Frame> = frames.into_iter()
                .map(|(k, n, p)| Frame::new(Kind::from_u8(k).unwrap(), n, p)).collect();
            let mut wire = Vec::new();
            for f in &frames { f.encode(&mut wire); }
            // Decode from growing prefixes, as a reader sees the stream.
            let mut got = Vec::new();
            let mut have = 0;
            let mut start = 0;
            while start < wire.len() {
                have = (have + cut).min(wire.len());
                while let Some((f, used)) = decode(&wire[start..have]).unwrap() {
                    got.push(f);
                    start += used;
                }
                if have == wire.len() && start < wire.len() { prop_assert!(false, "stuck"); }
            }
            prop_assert_eq!(got, frames);
        }
    }
}
