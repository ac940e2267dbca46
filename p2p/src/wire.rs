//! The peer protocol's bytes: the hello, the framed messages, and a decoder that bounds every
//! length before it allocates. `PROTOCOL.md` beside this crate is the specification; this
//! module is its one implementation.
//!
//! Decoding is split in two so that the same checks serve a buffer ([`Decoder::decode`], used
//! by tests and fuzzing) and a socket ([`read_message`], used by the driver, which reads a
//! piece's payload in paced chunks): [`Decoder::check_header`] validates a frame's length for
//! its type against the blob's layout, and only then does anyone reserve memory for it.

use std::io;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use shoal_core::digest::Algorithm;
use shoal_core::peer::PeerId;
use shoal_core::{Digest, Metainfo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::bitfield::{Bitfield, BitfieldError};

/// The protocol name every hello starts with.
pub const PROTOCOL_NAME: &[u8; 9] = b"shoal-p2p";
/// The only version this implementation speaks.
pub const VERSION: u16 = 1;
/// Name, version, flags and algorithm: what precedes the digest in a hello.
const HELLO_PREFIX: usize = 9 + 2 + 1 + 1;
/// The longest hello (a SHA-512 digest).
pub const MAX_HELLO_LEN: usize = HELLO_PREFIX + 64 + 20;
/// The longest text an error message may carry.
pub const MAX_ERROR_TEXT: usize = 1024;
/// Pieces are read off the socket in chunks of this size, each paid for at the ingress cap
/// before it is read, so a capped download is paced within a piece and not only between them.
pub const READ_CHUNK: usize = 64 << 10;

const HELLO_FLAG_ORIGIN: u8 = 1;

const KIND_BITFIELD: u8 = 0;
const KIND_HAVE: u8 = 1;
const KIND_REQUEST: u8 = 2;
const KIND_CANCEL: u8 = 3;
const KIND_PIECE: u8 = 4;
const KIND_REJECT: u8 = 5;
const KIND_ERROR: u8 = 6;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("peer does not speak the shoal peer protocol")]
    NotShoal,
    #[error("peer speaks protocol version {0}, this node speaks {VERSION}")]
    Version(u16),
    #[error("hello names unknown digest algorithm {0}")]
    Algorithm(u8),
    #[error("frame of kind {kind} is {len} bytes, at most {max} allowed")]
    TooLong { kind: u8, len: u32, max: u32 },
    #[error("frame of kind {kind} has wrong length {len}")]
    BadLength { kind: u8, len: u32 },
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("piece index {index} is out of range (blob has {pieces} pieces)")]
    PieceIndex { index: u32, pieces: u32 },
    #[error("piece {index} carries {len} bytes where the layout says {expected}")]
    PieceLength { index: u32, len: u32, expected: u32 },
    #[error(transparent)]
    Bitfield(#[from] BitfieldError),
    #[error("error text is not UTF-8")]
    ErrorText,
    #[error("connection I/O: {0}")]
    Io(#[from] io::Error),
}

/// Why a peer ends a connection, sent in an [`Message::Error`] frame before it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The other side broke the protocol.
    Protocol,
    /// The blob named in the hello is not served here.
    UnknownBlob,
    /// Connection limits are reached; try again later.
    Busy,
    /// This node will not talk to the sender (shunned, or a duplicate connection).
    Refused,
    /// The hello's version is not spoken here.
    Version,
    /// The node is shutting down or has stopped seeding this blob.
    Shutdown,
    /// A code from a newer peer.
    Other(u16),
}

impl ErrorCode {
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::Protocol => 1,
            ErrorCode::UnknownBlob => 2,
            ErrorCode::Busy => 3,
            ErrorCode::Refused => 4,
            ErrorCode::Version => 5,
            ErrorCode::Shutdown => 6,
            ErrorCode::Other(c) => c,
        }
    }

    pub fn from_u16(c: u16) -> Self {
        match c {
            1 => ErrorCode::Protocol,
            2 => ErrorCode::UnknownBlob,
            3 => ErrorCode::Busy,
            4 => ErrorCode::Refused,
            5 => ErrorCode::Version,
            6 => ErrorCode::Shutdown,
            c => ErrorCode::Other(c),
        }
    }
}

/// The first bytes each side sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub digest: Digest,
    pub peer_id: PeerId,
    /// The sender is an origin: a seed of last resort.
    pub origin: bool,
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_HELLO_LEN);
        out.extend_from_slice(PROTOCOL_NAME);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.push(if self.origin { HELLO_FLAG_ORIGIN } else { 0 });
        out.push(algorithm_code(self.digest.algorithm()));
        out.extend_from_slice(self.digest.as_bytes());
        out.extend_from_slice(&self.peer_id.0);
        out
    }

    /// Decodes a hello from the front of `bytes`; `Ok(None)` if more bytes are needed,
    /// otherwise the hello and how many bytes it took.
    pub fn decode(bytes: &[u8]) -> Result<Option<(Hello, usize)>, WireError> {
        // Reject a stranger as soon as its first bytes differ, rather than waiting for a
        // full hello that may never come.
        let name_seen = bytes.len().min(PROTOCOL_NAME.len());
        if bytes[..name_seen] != PROTOCOL_NAME[..name_seen] {
            return Err(WireError::NotShoal);
        }
        if bytes.len() < HELLO_PREFIX {
            return Ok(None);
        }
        let version = u16::from_be_bytes([bytes[9], bytes[10]]);
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let flags = bytes[11];
        let algorithm = algorithm_from_code(bytes[12])?;
        let total = HELLO_PREFIX + algorithm.hash_len() + 20;
        if bytes.len() < total {
            return Ok(None);
        }
        let digest_end = HELLO_PREFIX + algorithm.hash_len();
        let digest = Digest::from_raw(algorithm, &bytes[HELLO_PREFIX..digest_end])
            .ok_or(WireError::Algorithm(bytes[12]))?;
        let mut id = [0u8; 20];
        id.copy_from_slice(&bytes[digest_end..total]);
        Ok(Some((
            Hello {
                digest,
                peer_id: PeerId(id),
                // Unknown flag bits are ignored: a later version may use them.
                origin: flags & HELLO_FLAG_ORIGIN != 0,
            },
            total,
        )))
    }
}

fn algorithm_code(a: Algorithm) -> u8 {
    match a {
        Algorithm::Sha256 => 1,
        Algorithm::Sha512 => 2,
    }
}

fn algorithm_from_code(c: u8) -> Result<Algorithm, WireError> {
    match c {
        1 => Ok(Algorithm::Sha256),
        2 => Ok(Algorithm::Sha512),
        other => Err(WireError::Algorithm(other)),
    }
}

/// A message after the hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    KeepAlive,
    /// The pieces the sender holds; the first message each side sends, exactly once.
    Bitfield(Bitfield),
    /// The sender now holds piece `index` (verified and stored).
    Have(u32),
    /// Please send piece `index`.
    Request(u32),
    /// Never mind piece `index`, if it has not been sent yet.
    Cancel(u32),
    /// Piece `index`, all of it.
    Piece {
        index: u32,
        data: Bytes,
    },
    /// The sender will not send piece `index` now (its upload queue is full); ask someone
    /// else or later.
    Reject(u32),
    /// The sender is closing the connection, and why.
    Error {
        code: ErrorCode,
        message: String,
    },
}

impl Message {
    /// Appends the framed encoding to `out`. A piece's data is copied; the driver writes
    /// pieces with [`piece_header`] and the data separately instead.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Message::KeepAlive => out.put_u32(0),
            Message::Bitfield(b) => {
                let bytes = b.to_bytes();
                out.put_u32(1 + bytes.len() as u32);
                out.put_u8(KIND_BITFIELD);
                out.put_slice(&bytes);
            }
            Message::Have(i) => index_frame(out, KIND_HAVE, *i),
            Message::Request(i) => index_frame(out, KIND_REQUEST, *i),
            Message::Cancel(i) => index_frame(out, KIND_CANCEL, *i),
            Message::Reject(i) => index_frame(out, KIND_REJECT, *i),
            Message::Piece { index, data } => {
                out.put_slice(&piece_header(*index, data.len() as u32));
                out.put_slice(data);
            }
            Message::Error { code, message } => {
                let text = truncate_utf8(message, MAX_ERROR_TEXT);
                out.put_u32(1 + 2 + text.len() as u32);
                out.put_u8(KIND_ERROR);
                out.put_u16(code.to_u16());
                out.put_slice(text.as_bytes());
            }
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }
}

/// The nine bytes in front of a piece's data.
pub fn piece_header(index: u32, data_len: u32) -> [u8; 9] {
    let mut h = [0u8; 9];
    h[..4].copy_from_slice(&(1 + 4 + data_len).to_be_bytes());
    h[4] = KIND_PIECE;
    h[5..].copy_from_slice(&index.to_be_bytes());
    h
}

fn index_frame(out: &mut BytesMut, kind: u8, index: u32) {
    out.put_u32(5);
    out.put_u8(kind);
    out.put_u32(index);
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// What the decoder knows of the blob: enough to bound and check every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub pieces: u32,
    pub piece_length: u32,
    pub length: u64,
}

impl Layout {
    pub fn of(m: &Metainfo) -> Self {
        Layout {
            pieces: m.piece_count() as u32,
            piece_length: m.piece_length(),
            length: m.length(),
        }
    }

    pub fn piece_size(&self, index: u32) -> Option<u32> {
        if index >= self.pieces {
            return None;
        }
        let start = index as u64 * self.piece_length as u64;
        Some((self.length - start).min(self.piece_length as u64) as u32)
    }
}

/// Decodes frames for one connection, given the blob's layout.
#[derive(Debug, Clone)]
pub struct Decoder {
    layout: Layout,
}

impl Decoder {
    pub fn new(layout: Layout) -> Self {
        Decoder { layout }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The longest frame (length prefix included) this decoder accepts: the most it ever
    /// asks a reader to buffer.
    pub fn max_frame_len(&self) -> usize {
        4 + self
            .max_len(KIND_PIECE)
            .max(self.max_len(KIND_BITFIELD))
            .max(self.max_len(KIND_ERROR)) as usize
    }

    fn max_len(&self, kind: u8) -> u32 {
        match kind {
            KIND_BITFIELD => 1 + self.layout.pieces.div_ceil(8),
            KIND_HAVE | KIND_REQUEST | KIND_CANCEL | KIND_REJECT => 5,
            KIND_PIECE => 1 + 4 + self.layout.piece_length,
            KIND_ERROR => 1 + 2 + MAX_ERROR_TEXT as u32,
            _ => 0,
        }
    }

    /// Checks a frame's length against what its kind allows, before anything is read or
    /// allocated for its payload.
    pub fn check_header(&self, len: u32, kind: u8) -> Result<(), WireError> {
        let max = self.max_len(kind);
        if max == 0 {
            return Err(WireError::UnknownKind(kind));
        }
        if len > max {
            return Err(WireError::TooLong { kind, len, max });
        }
        let exact = match kind {
            KIND_BITFIELD | KIND_HAVE | KIND_REQUEST | KIND_CANCEL | KIND_REJECT => len == max,
            KIND_PIECE => len > 5,
            KIND_ERROR => len >= 3,
            _ => false,
        };
        if !exact {
            return Err(WireError::BadLength { kind, len });
        }
        Ok(())
    }

    fn index(&self, index: u32) -> Result<u32, WireError> {
        if index >= self.layout.pieces {
            return Err(WireError::PieceIndex {
                index,
                pieces: self.layout.pieces,
            });
        }
        Ok(index)
    }

    /// Parses a payload (the frame after its length and kind) already checked by
    /// [`Decoder::check_header`].
    pub fn parse_payload(&self, kind: u8, mut payload: Bytes) -> Result<Message, WireError> {
        Ok(match kind {
            KIND_BITFIELD => {
                Message::Bitfield(Bitfield::from_bytes(&payload, self.layout.pieces as usize)?)
            }
            KIND_HAVE => Message::Have(self.index(payload.get_u32())?),
            KIND_REQUEST => Message::Request(self.index(payload.get_u32())?),
            KIND_CANCEL => Message::Cancel(self.index(payload.get_u32())?),
            KIND_REJECT => Message::Reject(self.index(payload.get_u32())?),
            KIND_PIECE => {
                let index = self.index(payload.get_u32())?;
                self.check_piece_len(index, payload.len() as u32)?;
                Message::Piece {
                    index,
                    data: payload,
                }
            }
            KIND_ERROR => {
                let code = ErrorCode::from_u16(payload.get_u16());
                let message = std::str::from_utf8(&payload)
                    .map_err(|_| WireError::ErrorText)?
                    .to_owned();
                Message::Error { code, message }
            }
            other => return Err(WireError::UnknownKind(other)),
        })
    }

    fn check_piece_len(&self, index: u32, len: u32) -> Result<(), WireError> {
        let expected = self.layout.piece_size(index).unwrap_or(0);
        if len != expected {
            return Err(WireError::PieceLength {
                index,
                len,
                expected,
            });
        }
        Ok(())
    }

    /// How many bytes the frame at the front of `buf` needs in all, once its header is
    /// there and checked: what a reader may reserve. `Ok(None)` if the header is incomplete.
    pub fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, WireError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if len == 0 {
            return Ok(Some(4));
        }
        let Some(&kind) = buf.get(4) else {
            return Ok(None);
        };
        self.check_header(len, kind)?;
        Ok(Some(4 + len as usize))
    }

    /// Takes one whole frame off the front of `buf`, if one is there.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Message>, WireError> {
        let Some(total) = self.frame_len(buf)? else {
            return Ok(None);
        };
        if buf.len() < total {
            return Ok(None);
        }
        let mut frame = buf.split_to(total).freeze();
        frame.advance(4);
        if frame.is_empty() {
            return Ok(Some(Message::KeepAlive));
        }
        let kind = frame.get_u8();
        self.parse_payload(kind, frame).map(Some)
    }
}

/// Reads a hello from a socket.
pub async fn read_hello<R: AsyncRead + Unpin>(r: &mut R) -> Result<Hello, WireError> {
    let mut buf = [0u8; MAX_HELLO_LEN];
    let mut have = 0;
    loop {
        if let Some((hello, _)) = Hello::decode(&buf[..have])? {
            return Ok(hello);
        }
        // Read only up to the end of the prefix first, then up to the end of the hello
        // its algorithm implies, so that nothing after the hello is consumed here.
        let want = if have < HELLO_PREFIX {
            HELLO_PREFIX
        } else {
            HELLO_PREFIX + algorithm_from_code(buf[12])?.hash_len() + 20
        };
        let n = r.read(&mut buf[have..want]).await?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        have += n;
    }
}

pub async fn write_hello<W: AsyncWrite + Unpin>(w: &mut W, hello: &Hello) -> io::Result<()> {
    w.write_all(&hello.encode()).await?;
    w.flush().await
}

/// Something that makes a reader wait before it may read `n` more bytes: the ingress cap.
pub trait Pacer {
    fn pace(&self, n: usize) -> impl Future<Output = ()> + Send;

    /// A piece of `len` bytes begins: called once per piece, before its buffer is
    /// allocated, so a reader can wait until it has room for it.
    fn begin_piece(&self, len: usize) -> impl Future<Output = ()> + Send {
        let _ = len;
        std::future::ready(())
    }
}

/// No cap.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unpaced;

impl Pacer for Unpaced {
    async fn pace(&self, _n: usize) {}
}

/// Reads one message from a socket. A piece's data is read in [`READ_CHUNK`]s, each paced
/// before it is read (and the whole piece announced to [`Pacer::begin_piece`] before its
/// buffer is allocated); `on_chunk` hears of every chunk (progress and stall detection).
/// Every length is checked before the buffer for it is reserved.
pub async fn read_message<R, P>(
    r: &mut R,
    decoder: &Decoder,
    pacer: &P,
    mut on_chunk: impl FnMut(usize),
) -> Result<Message, WireError>
where
    R: AsyncRead + Unpin,
    P: Pacer,
{
    let len = r.read_u32().await?;
    if len == 0 {
        return Ok(Message::KeepAlive);
    }
    let kind = r.read_u8().await?;
    decoder.check_header(len, kind)?;
    let payload_len = len as usize - 1;
    let mut piece = None;
    if kind == KIND_PIECE {
        let index = decoder.index(r.read_u32().await?)?;
        decoder.check_piece_len(index, len - 5)?;
        pacer.begin_piece(len as usize - 5).await;
        piece = Some(index);
    }
    let mut payload = BytesMut::with_capacity(payload_len);
    if let Some(index) = piece {
        payload.put_u32(index);
    }
    while payload.len() < payload_len {
        let n = (payload_len - payload.len()).min(READ_CHUNK);
        if kind == KIND_PIECE {
            pacer.pace(n).await;
        }
        let start = payload.len();
        payload.resize(start + n, 0);
        r.read_exact(&mut payload[start..]).await?;
        on_chunk(n);
    }
    decoder.parse_payload(kind, payload.freeze())
}

/// How long a connection may stay silent before the reader gives up on it; senders send a
/// keep-alive after a third of it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests;
