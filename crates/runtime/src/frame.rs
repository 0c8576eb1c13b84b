//! Frames of the worker protocol (docs/worker-protocol.md).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest frame either side accepts: a 20 MiB body plus meta fits easily.
pub const MAX_FRAME: usize = 64 << 20;

/// Bytes before the payload: length (4), kind (1), id (4).
const HEADER_LEN: usize = 9;

pub mod kind {
    pub const INVOKE: u8 = 1;
    pub const CANCEL: u8 = 2;
    pub const CONFIGURE: u8 = 3;
    pub const PING: u8 = 4;
    pub const READY: u8 = 16;
    pub const LOG: u8 = 17;
    pub const RESULT: u8 = 18;
    pub const CANCELLED: u8 = 19;
    pub const CONFIGURED: u8 = 20;
    pub const PONG: u8 = 21;
}

#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub id: u32,
    pub payload: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("worker closed its socket")]
    Closed,
    #[error("frame of {0} bytes is over the limit or malformed")]
    BadLength(usize),
    #[error("meta section is malformed")]
    BadMeta,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes the fixed header of a frame whose payload is `payload_len` bytes.
pub fn header(kind: u8, id: u32, payload_len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    let len = (payload_len + 5) as u32;
    h[0..4].copy_from_slice(&len.to_be_bytes());
    h[4] = kind;
    h[5..9].copy_from_slice(&id.to_be_bytes());
    h
}

/// Builds the header and meta section of a meta + body frame; the body is
/// written after it without being copied.
pub fn meta_prefix(kind: u8, id: u32, meta: &[u8], body_len: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(HEADER_LEN + 4 + meta.len());
    buf.put_slice(&header(kind, id, 4 + meta.len() + body_len));
    buf.put_u32(meta.len() as u32);
    buf.put_slice(meta);
    buf.freeze()
}

/// Splits a meta + body payload into its two parts.
pub fn split_meta(mut payload: Bytes) -> Result<(Bytes, Bytes), FrameError> {
    if payload.len() < 4 {
        return Err(FrameError::BadMeta);
    }
    let meta_len = payload.get_u32() as usize;
    if meta_len > payload.len() {
        return Err(FrameError::BadMeta);
    }
    let meta = payload.split_to(meta_len);
    Ok((meta, payload))
}

/// Reads frames from a worker's socket, buffering partial reads.
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: BytesMut::with_capacity(64 << 10),
        }
    }

    pub async fn next(&mut self) -> Result<Frame, FrameError> {
        loop {
            if let Some(frame) = self.try_parse()? {
                return Ok(frame);
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return Err(FrameError::Closed);
            }
        }
    }

    fn try_parse(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if !(5..=MAX_FRAME).contains(&len) {
            return Err(FrameError::BadLength(len));
        }
        if self.buf.len() < 4 + len {
            self.buf.reserve(4 + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(4);
        let mut frame = self.buf.split_to(len);
        let kind = frame.get_u8();
        let id = frame.get_u32();
        Ok(Some(Frame {
            kind,
            id,
            payload: frame.freeze(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_frames_split_across_reads_and_packed_together() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&header(kind::LOG, 7, 3));
        wire.extend_from_slice(b"\x01hi");
        wire.extend_from_slice(&meta_prefix(kind::RESULT, 7, b"{}", 2));
        wire.extend_from_slice(b"ok");
        let (client, mut server) = tokio::io::duplex(4);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            server.write_all(&wire).await.expect("write");
        });
        let mut reader = FrameReader::new(client);
        let log = reader.next().await.expect("log frame");
        assert_eq!(
            (log.kind, log.id, &log.payload[..]),
            (kind::LOG, 7, &b"\x01hi"[..])
        );
        let result = reader.next().await.expect("result frame");
        let (meta, body) = split_meta(result.payload).expect("meta");
        assert_eq!((&meta[..], &body[..]), (&b"{}"[..], &b"ok"[..]));
        writer.await.expect("writer");
        assert!(matches!(reader.next().await, Err(FrameError::Closed)));
    }

    #[tokio::test]
    async fn rejects_oversized_length() {
        let (client, mut server) = tokio::io::duplex(64);
        use tokio::io::AsyncWriteExt;
        server
            .write_all(&u32::MAX.to_be_bytes())
            .await
            .expect("write");
        let mut reader = FrameReader::new(client);
        assert!(matches!(reader.next().await, Err(FrameError::BadLength(_))));
    }

    #[test]
    fn split_meta_rejects_meta_longer_than_payload() {
        let payload = Bytes::from_static(b"\x00\x00\x00\x09ab");
        assert!(split_meta(payload).is_err());
    }
}
