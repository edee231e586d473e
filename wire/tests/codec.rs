//! Fixed-byte, round-trip and async stream tests for the frame codec.

use bytes::Bytes;
use wire::*;

/// One sample of every frame type.
pub fn samples() -> Vec<Frame> {
    vec![
        Frame::Register(Register {
            passphrase: "correct horse".into(),
            hostname: "web-01".into(),
            bios_uuid: None,
        }),
        Frame::Register(Register {
            passphrase: "correct horse".into(),
            hostname: "web-02".into(),
            bios_uuid: Some("42172e0b-9a4c-4c3f-8d2e-0123456789ab".into()),
        }),
        Frame::Registered(Registered {
            agent_id: "agent-7".into(),
            cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".repeat(3),
            key_pem: "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n".into(),
            ca_pem: "ca".into(),
        }),
        sample_hello(),
        Frame::Welcome(Welcome {
            version: 1,
            window_bytes: 64 << 20,
            resume: vec![
                Resume {
                    disk_index: 0,
                    durable_seq: 0,
                },
                Resume {
                    disk_index: 1,
                    durable_seq: u64::MAX,
                },
            ],
        }),
        Frame::Extent(Extent {
            disk_index: 3,
            seq: 42,
            offset: 5 * BLOCK_SIZE,
            data: Bytes::from(vec![7u8; MAX_EXTENT_BYTES]),
        }),
        Frame::Ack(Ack {
            disk_index: 1,
            durable_seq: 7,
        }),
        sample_bookmark(),
        Frame::PointDurable(PointDurable {
            bookmark_id: 9,
            point_id: "p-0001".into(),
        }),
        Frame::Error(ErrorFrame {
            code: ErrorCode::Revoked,
            message: "agent revoked".into(),
        }),
        Frame::Error(ErrorFrame {
            code: ErrorCode::Other(999),
            message: String::new(),
        }),
        Frame::Ping(1),
        Frame::Pong(u64::MAX),
    ]
}

fn sample_hello() -> Frame {
    Frame::Hello(Hello {
        min_version: 1,
        max_version: 1,
        agent_id: "a1".into(),
        hostname: "h".into(),
        disks: vec![DiskInfo {
            disk_id: "disk0".into(),
            size_bytes: 131072,
            label: "/dev/sda".into(),
        }],
    })
}

fn sample_bookmark() -> Frame {
    Frame::Bookmark(Bookmark {
        bookmark_id: 1_700_000_000_000,
        kind: PointKind::Crash,
        seqs: vec![
            DiskSeq {
                disk_index: 0,
                seq: 5,
            },
            DiskSeq {
                disk_index: 1,
                seq: 9,
            },
        ],
    })
}

fn enc(f: &Frame) -> Vec<u8> {
    let mut v = Vec::new();
    encode(f, &mut v);
    v
}

#[test]
fn fixed_bytes_hello() {
    let want = [
        0x46, 0x57, 0x01, 0x03, 0x00, 0x00, 0x00, 0x26, 0x01, 0x01, 0x00, 0x02, 0x61, 0x31, 0x00,
        0x01, 0x68, 0x00, 0x00, 0x00, 0x01, 0x00, 0x05, 0x64, 0x69, 0x73, 0x6b, 0x30, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x08, 0x2f, 0x64, 0x65, 0x76, 0x2f, 0x73, 0x64,
        0x61, 0x52, 0x15, 0x9f, 0x86,
    ];
    assert_eq!(enc(&sample_hello()), want);
    assert_eq!(decode(&want).unwrap(), Some((sample_hello(), want.len())));
}

#[test]
fn fixed_bytes_extent() {
    let f = Frame::Extent(Extent {
        disk_index: 0,
        seq: 1,
        offset: 65536,
        data: Bytes::from_static(&[0xab; 4]),
    });
    let want = [
        0x46, 0x57, 0x01, 0x05, 0x00, 0x00, 0x00, 0x1a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04,
        0xab, 0xab, 0xab, 0xab, 0xf1, 0x28, 0x9b, 0xd5,
    ];
    assert_eq!(enc(&f), want);
    assert_eq!(decode(&want).unwrap(), Some((f, want.len())));
}

#[test]
fn fixed_bytes_ack() {
    let f = Frame::Ack(Ack {
        disk_index: 1,
        durable_seq: 7,
    });
    let want = [
        0x46, 0x57, 0x01, 0x06, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x07, 0x5e, 0x4d, 0x1f, 0x6d,
    ];
    assert_eq!(enc(&f), want);
    assert_eq!(decode(&want).unwrap(), Some((f, want.len())));
}

#[test]
fn fixed_bytes_bookmark() {
    let want = [
        0x46, 0x57, 0x01, 0x07, 0x00, 0x00, 0x00, 0x21, 0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x05, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0xba, 0x3b, 0x91, 0x70,
    ];
    assert_eq!(enc(&sample_bookmark()), want);
    assert_eq!(
        decode(&want).unwrap(),
        Some((sample_bookmark(), want.len()))
    );
}

#[test]
fn fixed_bytes_error() {
    let f = Frame::Error(ErrorFrame {
        code: ErrorCode::BadPassphrase,
        message: "no".into(),
    });
    let want = [
        0x46, 0x57, 0x01, 0x09, 0x00, 0x00, 0x00, 0x06, 0x00, 0x01, 0x00, 0x02, 0x6e, 0x6f, 0x87,
        0x96, 0x74, 0x47,
    ];
    assert_eq!(enc(&f), want);
    assert_eq!(decode(&want).unwrap(), Some((f, want.len())));
}

#[test]
fn every_frame_round_trips_through_decode_and_decode_bytes() {
    for f in samples() {
        let bytes = enc(&f);
        assert_eq!(bytes[3], f.type_code());
        let (got, used) = decode(&bytes).unwrap().unwrap();
        assert_eq!(got, f, "{}", f.name());
        assert_eq!(used, bytes.len());
        let shared = Bytes::from(bytes.clone());
        let (got, used) = decode_bytes(&shared).unwrap().unwrap();
        assert_eq!(got, f);
        assert_eq!(used, bytes.len());
    }
}

#[test]
fn every_prefix_of_a_frame_needs_more_bytes() {
    for f in samples()
        .into_iter()
        .filter(|f| !matches!(f, Frame::Extent(_)))
    {
        let bytes = enc(&f);
        for cut in 0..bytes.len() {
            assert!(
                decode(&bytes[..cut]).unwrap().is_none(),
                "{} cut {cut}",
                f.name()
            );
        }
    }
}

#[test]
fn back_to_back_frames_decode_in_order() {
    let mut stream = Vec::new();
    for f in samples() {
        encode(&f, &mut stream);
    }
    let mut pos = 0;
    let mut got = Vec::new();
    while let Some((f, used)) = decode(&stream[pos..]).unwrap() {
        got.push(f);
        pos += used;
    }
    assert_eq!(pos, stream.len());
    assert_eq!(got, samples());
}

#[test]
fn long_strings_are_cut_at_a_char_boundary_not_corrupted() {
    let f = Frame::Error(ErrorFrame {
        code: ErrorCode::Internal,
        message: "é".repeat(3000),
    });
    let (got, _) = decode(&enc(&f)).unwrap().unwrap();
    let Frame::Error(e) = got else { panic!() };
    assert_eq!(e.message, "é".repeat(2048));
}

#[test]
fn error_codes_keep_their_numbers() {
    let codes = [
        (ErrorCode::BadPassphrase, 1, "bad_passphrase"),
        (ErrorCode::Revoked, 2, "revoked"),
        (ErrorCode::UnknownAgent, 3, "unknown_agent"),
        (ErrorCode::Protocol, 4, "protocol"),
        (ErrorCode::UnsupportedVersion, 5, "unsupported_version"),
        (ErrorCode::Internal, 6, "internal"),
        (ErrorCode::BadFrame, 7, "bad_frame"),
    ];
    for (code, n, name) in codes {
        assert_eq!(code.to_u16(), n);
        assert_eq!(ErrorCode::from_u16(n), code);
        assert_eq!(code.name(), name);
    }
    assert_eq!(ErrorCode::from_u16(77), ErrorCode::Other(77));
}

#[tokio::test]
async fn async_stream_round_trip_and_clean_eof() {
    let (mut a, mut b) = tokio::io::duplex(1 << 16);
    let writer = tokio::spawn(async move {
        for f in samples() {
            write_frame(&mut a, &f).await.unwrap();
        }
        // dropping `a` closes the stream at a frame boundary
    });
    let mut got = Vec::new();
    while let Some(f) = read_frame(&mut b).await.unwrap() {
        got.push(f);
    }
    writer.await.unwrap();
    assert_eq!(got, samples());
}

#[tokio::test]
async fn write_frame_matches_encode_for_extents() {
    let f = Frame::Extent(Extent {
        disk_index: 2,
        seq: 3,
        offset: 0,
        data: Bytes::from(vec![1u8; 70000]),
    });
    let mut out = Vec::new();
    write_frame(&mut out, &f).await.unwrap();
    assert_eq!(out, enc(&f));
}
