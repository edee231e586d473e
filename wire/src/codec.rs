//! Frame encoding and decoding over byte buffers (layout: see the crate docs).

use bytes::{Buf, Bytes};

use crate::frames::*;
use crate::{
    WireError, BLOCK_SIZE, HEADER_LEN, MAGIC, MAX_BIOS_UUID, MAX_EXTENT_BYTES, MAX_PAYLOAD,
    MAX_STR, TRAILER_LEN, WIRE_VERSION,
};

/// Appends one whole frame (header, payload, CRC) to `out`.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(WIRE_VERSION);
    out.push(frame.type_code());
    out.extend_from_slice(&[0; 4]);
    encode_payload(frame, out);
    let payload_len = out.len() - start - HEADER_LEN;
    debug_assert!(payload_len <= MAX_PAYLOAD, "encoding an oversized frame");
    out[start + 4..start + 8].copy_from_slice(&(payload_len as u32).to_be_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Header plus the Extent fields before `data`, so the writer can send the data without copying
/// it into a frame buffer. Returns the prefix; the caller appends data and the CRC of both.
pub(crate) fn extent_prefix(e: &Extent) -> Vec<u8> {
    let payload_len = 2 + 8 + 8 + 4 + e.data.len();
    let mut out = Vec::with_capacity(HEADER_LEN + 22);
    out.extend_from_slice(&MAGIC);
    out.push(WIRE_VERSION);
    out.push(5);
    out.extend_from_slice(&(payload_len as u32).to_be_bytes());
    out.extend_from_slice(&e.disk_index.to_be_bytes());
    out.extend_from_slice(&e.seq.to_be_bytes());
    out.extend_from_slice(&e.offset.to_be_bytes());
    out.extend_from_slice(&(e.data.len() as u32).to_be_bytes());
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_str_max(out, s, MAX_STR);
}

/// A `str` of at most `max` bytes. A longer string would not fit the field; cutting it (at a char
/// boundary) keeps the frame valid. Only free text such as error messages can get that long in
/// practice; a cut BIOS UUID is no UUID any more and the appliance drops it.
fn put_str_max(out: &mut Vec<u8>, s: &str, max: usize) {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn put_lstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn encode_payload(frame: &Frame, out: &mut Vec<u8>) {
    match frame {
        Frame::Register(r) => {
            put_str(out, &r.passphrase);
            put_str(out, &r.hostname);
            // Absent rather than empty when unknown: the payload of an old agent, byte for byte.
            if let Some(uuid) = &r.bios_uuid {
                put_str_max(out, uuid, MAX_BIOS_UUID);
            }
        }
        Frame::Registered(r) => {
            put_str(out, &r.agent_id);
            put_lstr(out, &r.cert_pem);
            put_lstr(out, &r.key_pem);
            put_lstr(out, &r.ca_pem);
        }
        Frame::Hello(h) => {
            out.push(h.min_version);
            out.push(h.max_version);
            put_str(out, &h.agent_id);
            put_str(out, &h.hostname);
            out.extend_from_slice(&(h.disks.len() as u32).to_be_bytes());
            for d in &h.disks {
                put_str(out, &d.disk_id);
                out.extend_from_slice(&d.size_bytes.to_be_bytes());
                put_str(out, &d.label);
            }
        }
        Frame::Welcome(w) => {
            out.push(w.version);
            out.extend_from_slice(&w.window_bytes.to_be_bytes());
            out.extend_from_slice(&(w.resume.len() as u32).to_be_bytes());
            for r in &w.resume {
                out.extend_from_slice(&r.disk_index.to_be_bytes());
                out.extend_from_slice(&r.durable_seq.to_be_bytes());
            }
        }
        Frame::Extent(e) => {
            out.extend_from_slice(&e.disk_index.to_be_bytes());
            out.extend_from_slice(&e.seq.to_be_bytes());
            out.extend_from_slice(&e.offset.to_be_bytes());
            out.extend_from_slice(&(e.data.len() as u32).to_be_bytes());
            out.extend_from_slice(&e.data);
        }
        Frame::Ack(a) => {
            out.extend_from_slice(&a.disk_index.to_be_bytes());
            out.extend_from_slice(&a.durable_seq.to_be_bytes());
        }
        Frame::Bookmark(b) => {
            out.extend_from_slice(&b.bookmark_id.to_be_bytes());
            out.push(b.kind.to_u8());
            out.extend_from_slice(&(b.seqs.len() as u32).to_be_bytes());
            for s in &b.seqs {
                out.extend_from_slice(&s.disk_index.to_be_bytes());
                out.extend_from_slice(&s.seq.to_be_bytes());
            }
        }
        Frame::PointDurable(p) => {
            out.extend_from_slice(&p.bookmark_id.to_be_bytes());
            put_str(out, &p.point_id);
        }
        Frame::Error(e) => {
            out.extend_from_slice(&e.code.to_u16().to_be_bytes());
            put_str(out, &e.message);
        }
        Frame::Ping(n) | Frame::Pong(n) => out.extend_from_slice(&n.to_be_bytes()),
    }
}

/// Validates the header bytes present so far; returns the payload length once all 8 are there.
/// Checking a partial header lets a stream that is not Ferry at all fail on its first bytes.
pub(crate) fn check_header(buf: &[u8]) -> Result<Option<usize>, WireError> {
    if buf.iter().zip(MAGIC.iter()).any(|(a, b)| a != b) {
        return Err(WireError::BadMagic);
    }
    if let Some(&v) = buf.get(2) {
        if v != WIRE_VERSION {
            return Err(WireError::UnsupportedVersion(v));
        }
    }
    if let Some(&t) = buf.get(3) {
        if !is_known_type(t) {
            return Err(WireError::UnknownType(t));
        }
    }
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let n = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if n as usize > MAX_PAYLOAD {
        return Err(WireError::TooLarge(n));
    }
    Ok(Some(n as usize))
}

/// Decodes one frame from the front of `buf`. `Ok(None)` means more bytes are needed; on success
/// returns the frame and how many bytes of `buf` it used.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, WireError> {
    let Some(n) = check_header(buf)? else {
        return Ok(None);
    };
    let total = HEADER_LEN + n + TRAILER_LEN;
    if buf.len() < total {
        return Ok(None);
    }
    check_crc(&buf[..total])?;
    let payload = Bytes::copy_from_slice(&buf[HEADER_LEN..HEADER_LEN + n]);
    let frame = decode_payload(buf[3], payload)?;
    Ok(Some((frame, total)))
}

/// Like [`decode`] but an Extent's data shares `buf`'s allocation instead of being copied.
pub fn decode_bytes(buf: &Bytes) -> Result<Option<(Frame, usize)>, WireError> {
    let Some(n) = check_header(buf)? else {
        return Ok(None);
    };
    let total = HEADER_LEN + n + TRAILER_LEN;
    if buf.len() < total {
        return Ok(None);
    }
    check_crc(&buf[..total])?;
    let frame = decode_payload(buf[3], buf.slice(HEADER_LEN..HEADER_LEN + n))?;
    Ok(Some((frame, total)))
}

/// `frame` is one whole frame including its trailing CRC.
pub(crate) fn check_crc(frame: &[u8]) -> Result<(), WireError> {
    let (body, crc) = frame.split_at(frame.len() - TRAILER_LEN);
    let want = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(body) != want {
        return Err(WireError::Checksum);
    }
    Ok(())
}

/// A bounds-checked reader over a payload.
struct Cursor {
    buf: Bytes,
}

impl Cursor {
    fn need(&self, n: usize) -> Result<(), WireError> {
        if self.buf.remaining() < n {
            return Err(WireError::Malformed("payload ends inside a field"));
        }
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        self.need(8)?;
        Ok(self.buf.get_u64())
    }

    fn take(&mut self, n: usize) -> Result<Bytes, WireError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    fn utf8(&mut self, n: usize) -> Result<String, WireError> {
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).map_err(|_| WireError::Malformed("string is not UTF-8"))
    }

    fn str(&mut self) -> Result<String, WireError> {
        self.str_max(MAX_STR, "string longer than 4096 bytes")
    }

    fn str_max(&mut self, max: usize, too_long: &'static str) -> Result<String, WireError> {
        let n = self.u16()? as usize;
        if n > max {
            return Err(WireError::Malformed(too_long));
        }
        self.utf8(n)
    }

    /// A trailing optional field: present exactly when payload bytes are left.
    fn at_end(&self) -> bool {
        !self.buf.has_remaining()
    }

    fn lstr(&mut self) -> Result<String, WireError> {
        let n = self.u32()? as usize;
        self.utf8(n)
    }

    /// Reads a vec count and checks it against the bytes left, so a forged count cannot make us
    /// reserve more memory than the payload could possibly describe.
    fn count(&mut self, min_item_len: usize) -> Result<usize, WireError> {
        let n = self.u32()? as usize;
        if n > self.buf.remaining() / min_item_len {
            return Err(WireError::Malformed("vector count exceeds payload"));
        }
        Ok(n)
    }

    fn finish(&self) -> Result<(), WireError> {
        if self.buf.has_remaining() {
            return Err(WireError::Malformed("trailing bytes in payload"));
        }
        Ok(())
    }
}

pub(crate) fn decode_payload(frame_type: u8, payload: Bytes) -> Result<Frame, WireError> {
    let mut c = Cursor { buf: payload };
    let frame = match frame_type {
        1 => {
            let passphrase = c.str()?;
            let hostname = c.str()?;
            // Agents older than the field end the payload here.
            let bios_uuid = if c.at_end() {
                None
            } else {
                Some(c.str_max(MAX_BIOS_UUID, "BIOS UUID longer than 64 bytes")?)
            };
            Frame::Register(Register {
                passphrase,
                hostname,
                bios_uuid,
            })
        }
        2 => Frame::Registered(Registered {
            agent_id: c.str()?,
            cert_pem: c.lstr()?,
            key_pem: c.lstr()?,
            ca_pem: c.lstr()?,
        }),
        3 => {
            let min_version = c.u8()?;
            let max_version = c.u8()?;
            let agent_id = c.str()?;
            let hostname = c.str()?;
            let n = c.count(2 + 8 + 2)?;
            let mut disks = Vec::with_capacity(n);
            for _ in 0..n {
                disks.push(DiskInfo {
                    disk_id: c.str()?,
                    size_bytes: c.u64()?,
                    label: c.str()?,
                });
            }
            Frame::Hello(Hello {
                min_version,
                max_version,
                agent_id,
                hostname,
                disks,
            })
        }
        4 => {
            let version = c.u8()?;
            let window_bytes = c.u32()?;
            let n = c.count(10)?;
            let mut resume = Vec::with_capacity(n);
            for _ in 0..n {
                resume.push(Resume {
                    disk_index: c.u16()?,
                    durable_seq: c.u64()?,
                });
            }
            Frame::Welcome(Welcome {
                version,
                window_bytes,
                resume,
            })
        }
        5 => {
            let disk_index = c.u16()?;
            let seq = c.u64()?;
            let offset = c.u64()?;
            let len = c.u32()? as usize;
            if len == 0 || len > MAX_EXTENT_BYTES {
                return Err(WireError::Malformed("extent data length out of range"));
            }
            if offset % BLOCK_SIZE != 0 {
                return Err(WireError::Malformed("extent offset not block aligned"));
            }
            let data = c.take(len)?;
            Frame::Extent(Extent {
                disk_index,
                seq,
                offset,
                data,
            })
        }
        6 => Frame::Ack(Ack {
            disk_index: c.u16()?,
            durable_seq: c.u64()?,
        }),
        7 => {
            let bookmark_id = c.u64()?;
            let kind =
                PointKind::from_u8(c.u8()?).ok_or(WireError::Malformed("unknown bookmark kind"))?;
            let n = c.count(10)?;
            let mut seqs = Vec::with_capacity(n);
            for _ in 0..n {
                seqs.push(DiskSeq {
                    disk_index: c.u16()?,
                    seq: c.u64()?,
                });
            }
            Frame::Bookmark(Bookmark {
                bookmark_id,
                kind,
                seqs,
            })
        }
        8 => Frame::PointDurable(PointDurable {
            bookmark_id: c.u64()?,
            point_id: c.str()?,
        }),
        9 => Frame::Error(ErrorFrame {
            code: ErrorCode::from_u16(c.u16()?),
            message: c.str()?,
        }),
        10 => Frame::Ping(c.u64()?),
        11 => Frame::Pong(c.u64()?),
        other => return Err(WireError::UnknownType(other)),
    };
    c.finish()?;
    Ok(frame)
}
