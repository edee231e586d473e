//! Reading and writing frames on async streams.

use bytes::Bytes;
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
