//! Register's optional trailing `bios_uuid`: both layouts pinned byte for byte, the old layout (an agent
//! older than the field) still decodes, and bad text is either carried for the appliance to judge or,
//! when it breaks the frame rules, refused with a clear error.

use wire::*;

const UUID: &str = "42172e0b-9a4c-4c3f-8d2e-0123456789ab";

/// What an agent older than the field sends (and what a new agent sends when it has no UUID).
const OLD_LAYOUT: [u8; 19] = [
    0x46, 0x57, 0x01, 0x01, 0x00, 0x00, 0x00, 0x07, 0x00, 0x02, 0x70, 0x77, 0x00, 0x01, 0x68, 0x29,
    0x62, 0x50, 0x0c,
];

const NEW_LAYOUT: [u8; 57] = [
    0x46, 0x57, 0x01, 0x01, 0x00, 0x00, 0x00, 0x2d, 0x00, 0x02, 0x70, 0x77, 0x00, 0x01, 0x68, 0x00,
    0x24, 0x34, 0x32, 0x31, 0x37, 0x32, 0x65, 0x30, 0x62, 0x2d, 0x39, 0x61, 0x34, 0x63, 0x2d, 0x34,
    0x63, 0x33, 0x66, 0x2d, 0x38, 0x64, 0x32, 0x65, 0x2d, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36,
    0x37, 0x38, 0x39, 0x61, 0x62, 0x71, 0xea, 0x37, 0x30,
];

fn register(bios_uuid: Option<&str>) -> Frame {
    Frame::Register(Register {
        passphrase: "pw".into(),
        hostname: "h".into(),
        bios_uuid: bios_uuid.map(str::to_string),
    })
}

fn enc(f: &Frame) -> Vec<u8> {
    let mut v = Vec::new();
    encode(f, &mut v);
    v
}

/// A Register frame with a correct header and CRC around `payload`.
fn raw_register(payload: &[u8]) -> Vec<u8> {
    let mut v = b"FW".to_vec();
    v.push(WIRE_VERSION);
    v.push(1);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    let crc = crc32fast::hash(&v);
    v.extend_from_slice(&crc.to_be_bytes());
    v
}

/// The payload `"pw", "h"` followed by `rest`.
fn payload_with(rest: &[u8]) -> Vec<u8> {
    let mut p = vec![0x00, 0x02, b'p', b'w', 0x00, 0x01, b'h'];
    p.extend_from_slice(rest);
    p
}

fn decoded_uuid(bytes: &[u8]) -> Result<Option<String>, WireError> {
    match decode(bytes)? {
        Some((Frame::Register(r), used)) => {
            assert_eq!(used, bytes.len());
            Ok(r.bios_uuid)
        }
        other => panic!("not a whole Register: {other:?}"),
    }
}

#[test]
fn fixed_bytes_register_old_layout_decodes_as_none() {
    assert_eq!(enc(&register(None)), OLD_LAYOUT);
    assert_eq!(
        decode(&OLD_LAYOUT).unwrap(),
        Some((register(None), OLD_LAYOUT.len()))
    );
}

#[test]
fn fixed_bytes_register_with_bios_uuid() {
    assert_eq!(enc(&register(Some(UUID))), NEW_LAYOUT);
    assert_eq!(
        decode(&NEW_LAYOUT).unwrap(),
        Some((register(Some(UUID)), NEW_LAYOUT.len()))
    );
    let shared = bytes::Bytes::from_static(&NEW_LAYOUT);
    assert_eq!(
        decode_bytes(&shared).unwrap(),
        Some((register(Some(UUID)), NEW_LAYOUT.len()))
    );
}

#[test]
fn old_and_new_layouts_follow_each_other_in_one_stream() {
    let mut stream = OLD_LAYOUT.to_vec();
    stream.extend_from_slice(&NEW_LAYOUT);
    stream.extend_from_slice(&OLD_LAYOUT);
    let mut pos = 0;
    let mut got = Vec::new();
    while let Some((f, used)) = decode(&stream[pos..]).unwrap() {
        got.push(f);
        pos += used;
    }
    assert_eq!(pos, stream.len());
    assert_eq!(got, [register(None), register(Some(UUID)), register(None)]);
}

#[test]
fn text_that_is_no_uuid_is_carried_for_the_appliance_to_judge() {
    // The wire only bounds the field: the appliance drops what is not a UUID without failing the
    // registration, which it could not do if the frame were refused here.
    for text in [
        "not-a-uuid",
        "",
        "4C4C4544-0042-3510-8052-B4C04F4B4D32",
        "ünïcödé",
    ] {
        let bytes = enc(&register(Some(text)));
        assert_eq!(decoded_uuid(&bytes).unwrap().as_deref(), Some(text));
    }
    let longest = "x".repeat(MAX_BIOS_UUID);
    let bytes = enc(&register(Some(&longest)));
    assert_eq!(decoded_uuid(&bytes).unwrap(), Some(longest));
}

#[test]
fn too_long_bios_uuid_is_refused_by_the_decoder_and_cut_by_the_encoder() {
    let mut rest = 65u16.to_be_bytes().to_vec();
    rest.extend_from_slice(&[b'a'; 65]);
    assert!(matches!(
        decoded_uuid(&raw_register(&payload_with(&rest))),
        Err(WireError::Malformed(m)) if m.contains("BIOS UUID")
    ));
    // The encoder never writes a frame its peer would refuse: it cuts at a char boundary.
    let bytes = enc(&register(Some(&"x".repeat(100))));
    assert_eq!(decoded_uuid(&bytes).unwrap(), Some("x".repeat(64)));
    let bytes = enc(&register(Some(&"é".repeat(40))));
    assert_eq!(decoded_uuid(&bytes).unwrap(), Some("é".repeat(32)));
}

#[test]
fn broken_bios_uuid_fields_are_malformed() {
    let cases: [(&str, Vec<u8>); 5] = [
        ("half a length", vec![0x00]),
        ("length past the payload", vec![0x00, 0x24, b'4', b'2']),
        ("not UTF-8", vec![0x00, 0x02, 0xc3, 0x28]),
        ("a byte after the UUID", vec![0x00, 0x01, b'a', 0x00]),
        ("a second UUID", vec![0x00, 0x01, b'a', 0x00, 0x01, b'b']),
    ];
    for (what, rest) in cases {
        let got = decoded_uuid(&raw_register(&payload_with(&rest)));
        assert!(
            matches!(got, Err(WireError::Malformed(_))),
            "{what}: {got:?}"
        );
    }
    // A Register cut inside its required fields stays malformed too.
    assert!(matches!(
        decoded_uuid(&raw_register(&[0x00, 0x02, b'p', b'w'])),
        Err(WireError::Malformed(_))
    ));
}
