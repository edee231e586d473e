//! Reading and writing frames on async streams.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::codec::{check_crc, check_header, decode_payload, encode, extent_prefix};
use crate::{Frame, WireError, HEADER_LEN, TRAILER_LEN};

/// Reads one frame. `Ok(None)` is a clean end of stream at a frame boundary; an end of stream
/// anywhere inside a frame is [`WireError::Truncated`]. The length is checked against the limit
/// before the payload buffer is allocated.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, WireError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut header[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(WireError::Truncated)
            };
        }
        got += n;
        // Fail on the first wrong byte rather than waiting for a full header that may never come.
        check_header(&header[..got])?;
    }
    let n = check_header(&header)?.ok_or(WireError::Truncated)?;
    let mut buf = vec![0u8; HEADER_LEN + n + TRAILER_LEN];
    buf[..HEADER_LEN].copy_from_slice(&header);
    r.read_exact(&mut buf[HEADER_LEN..])
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => WireError::Truncated,
            _ => WireError::Io(e),
        })?;
    check_crc(&buf)?;
    let buf = Bytes::from(buf);
    let frame = decode_payload(header[3], buf.slice(HEADER_LEN..HEADER_LEN + n))?;
    Ok(Some(frame))
}

/// Reads frames like [`read_frame`], but each frame is read straight into a buffer of its exact size
/// that is not zero-filled first, and the bytes of a frame read so far stay here if the call is
/// dropped midway (cancel-safe, so it can sit in a `select!` that may pick another branch).
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    /// The frame being read: its header, then as much of the rest as has arrived.
    frame: BytesMut,
    /// The frame's whole length once its header is known.
    total: Option<usize>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            frame: BytesMut::with_capacity(HEADER_LEN),
            total: None,
        }
    }

    /// Reads one frame, with the same results as [`read_frame`].
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, WireError> {
        loop {
            let want = match self.total {
                Some(total) if self.frame.len() == total => {
                    let frame =
                        std::mem::replace(&mut self.frame, BytesMut::with_capacity(HEADER_LEN))
                            .freeze();
                    self.total = None;
                    check_crc(&frame)?;
                    let n = total - HEADER_LEN - TRAILER_LEN;
                    return decode_payload(frame[3], frame.slice(HEADER_LEN..HEADER_LEN + n))
                        .map(Some);
                }
                Some(total) => total,
                None => {
                    // Fail on the first wrong byte rather than waiting for a full header that may never come.
                    if let Some(n) = check_header(&self.frame)? {
                        let total = HEADER_LEN + n + TRAILER_LEN;
                        // Checked against the limit before this allocation.
                        let mut frame = BytesMut::with_capacity(total);
                        frame.extend_from_slice(&self.frame);
                        self.frame = frame;
                        self.total = Some(total);
                        continue;
                    }
                    HEADER_LEN
                }
            };
            let left = (want - self.frame.len()) as u64;
            if (&mut self.inner)
                .take(left)
                .read_buf(&mut self.frame)
                .await?
                == 0
            {
                return if self.frame.is_empty() {
                    Ok(None)
                } else {
                    Err(WireError::Truncated)
                };
            }
        }
    }
}

/// Writes one frame. Extent data goes to the writer straight from its `Bytes` (no frame-sized
/// copy). Does NOT flush: a TLS stream keeps data buffered until flushed, so call `flush()` after
/// the last frame of a burst (wrap the stream in a `BufWriter` and flush when the queue drains).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, f: &Frame) -> Result<(), WireError> {
    match f {
        Frame::Extent(e) => {
            let prefix = extent_prefix(e);
            let mut crc = crc32fast::Hasher::new();
            crc.update(&prefix);
            crc.update(&e.data);
            w.write_all(&prefix).await?;
            w.write_all(&e.data).await?;
            w.write_all(&crc.finalize().to_be_bytes()).await?;
        }
        other => {
            let mut buf = Vec::with_capacity(64);
            encode(other, &mut buf);
            w.write_all(&buf).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode;
    use crate::Extent;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::ReadBuf;

    /// Hands out its bytes a few at a time, like a network stream.
    struct Dribble {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl AsyncRead for Dribble {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = self
                .step
                .min(self.data.len() - self.at)
                .min(out.remaining());
            let at = self.at;
            out.put_slice(&self.data[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(()))
        }
    }

    fn frames() -> Vec<Frame> {
        let mut v = vec![Frame::Ping(1)];
        for (i, len) in [1usize, 65536, 1 << 20, 3].into_iter().enumerate() {
            v.push(Frame::Extent(Extent {
                disk_index: i as u16,
                seq: i as u64 + 1,
                offset: 0,
                data: Bytes::from((0..len).map(|x| (x * 31 + i) as u8).collect::<Vec<_>>()),
            }));
        }
        v.push(Frame::Pong(2));
        v
    }

    fn stream(frames: &[Frame]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            encode(f, &mut out);
        }
        out
    }

    #[tokio::test]
    async fn reads_the_same_frames_whatever_the_read_sizes() {
        let want = frames();
        let data = stream(&want);
        for step in [1, 7, 4096, 1 << 22] {
            let mut r = FrameReader::new(Dribble {
                data: data.clone(),
                at: 0,
                step,
            });
            let mut got = Vec::new();
            // Frames are kept while later ones are read: the buffer must not be reused under them.
            while let Some(f) = r.read_frame().await.unwrap() {
                got.push(f);
            }
            assert_eq!(got, want, "step {step}");
        }
    }

    #[tokio::test]
    async fn bad_input_is_an_error_like_read_frame() {
        let data = stream(&[Frame::Ping(9)]);
        for cut in 1..data.len() {
            let mut r = FrameReader::new(&data[..cut]);
            assert!(
                matches!(r.read_frame().await, Err(WireError::Truncated)),
                "cut {cut}"
            );
        }
        let mut empty = FrameReader::new(&[][..]);
        assert!(empty.read_frame().await.unwrap().is_none());
        let mut flipped = data.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            FrameReader::new(&flipped[..]).read_frame().await,
            Err(WireError::Checksum)
        ));
        assert!(matches!(
            FrameReader::new(&b"HTTP/1.1 400"[..]).read_frame().await,
            Err(WireError::BadMagic)
        ));
        // A huge length fails on the header alone, before anything is allocated for it.
        let mut huge = b"FW\x01\x05".to_vec();
        huge.extend(u32::MAX.to_be_bytes());
        assert!(matches!(
            FrameReader::new(&huge[..]).read_frame().await,
            Err(WireError::TooLarge(u32::MAX))
        ));
        let mut seed = 11u64;
        for _ in 0..300 {
            let junk: Vec<u8> = (0..40)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 33) as u8
                })
                .collect();
            let _ = FrameReader::new(&junk[..]).read_frame().await;
        }
    }
}
