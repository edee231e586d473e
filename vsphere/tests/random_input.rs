//! Stable-toolchain stand-in for the cargo-fuzz target `soap_response`: 20,000 seeded random and
//! mutated responses through the XML reader and every response parser; none may panic.

use vsphere::fuzzing::{parse_everything, samples};

/// xorshift64*: deterministic, so a failure names its iteration and reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Pieces that steer mutations into the interesting parts of the grammar.
const TOKENS: &[&str] = &[
    "<",
    ">",
    "/>",
    "</",
    "&amp;",
    "&#x1F600;",
    "&bogus;",
    "<![CDATA[",
    "]]>",
    "<!--",
    "-->",
    "xmlns=\"urn:vim25\"",
    "xmlns:x=\"http://www.w3.org/2001/XMLSchema-instance\"",
    "x:type=\"",
    "xsi:type=\"ArrayOfString\"",
    "xsi:type=\"ManagedObjectReference\"",
    "xsi:type=\"xsd:int\"",
    "type=\"VirtualMachine\"",
    "<returnval>",
    "</returnval>",
    "<token>t</token>",
    "<val>",
    "<missingSet><path>p</path><fault><fault xsi:type=\"NotAuthenticated\"/></fault></missingSet>",
    "<kind>leave</kind>",
    "<op>indirectRemove</op>",
    "<!DOCTYPE a>",
    "\u{0}",
    "\u{fffd}",
];

fn mutate(rng: &mut Rng, mut b: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(3) {
        let pos = rng.below(b.len() + 1);
        match rng.below(12) {
            0 if pos < b.len() => b[pos] = rng.next() as u8,
            1 => b.truncate(pos),
            5..=8 if pos < b.len() => {
                // Change a character of text (between tags), so the document often stays well-formed.
                if let Some(start) = b[pos..].iter().position(|&c| c == b'>') {
                    let at = pos + start + 1;
                    if at < b.len() && b[at] != b'<' {
                        b[at] = b"0123456789abcxyz -.:"[rng.below(20)];
                    }
                }
            }
            2 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                b.splice(pos..pos, token.iter().copied());
            }
            3 if pos < b.len() => {
                let end = (pos + rng.below(64)).min(b.len());
                b.drain(pos..end);
            }
            4 => {
                // Duplicate a slice: repeated and nested elements.
                let end = (pos + rng.below(200)).min(b.len());
                let copy = b[pos..end].to_vec();
                b.splice(pos..pos, copy);
            }
            _ => b.insert(pos.min(b.len()), rng.next() as u8),
        }
    }
    b
}

#[test]
fn twenty_thousand_random_and_mutated_responses_never_panic() {
    let mut rng = Rng(0x5eed_50a9_2026_0001);
    let seeds: Vec<Vec<u8>> = samples().iter().map(|s| s.as_bytes().to_vec()).collect();
    let mut parsed = 0;
    let mut deep = 0;
    for i in 0..20_000 {
        let buf = match i % 5 {
            0 => (0..rng.below(256)).map(|_| rng.next() as u8).collect(),
            _ => {
                let seed = seeds[rng.below(seeds.len())].clone();
                mutate(&mut rng, seed)
            }
        };
        let accepted = parse_everything(&buf);
        if accepted > 0 {
            parsed += 1;
        }
        if accepted > 3 {
            deep += 1;
        }
    }
    // Sanity floors: mutations must keep reaching past the XML reader into the response parsers.
    assert!(parsed > 2_000, "only {parsed} buffers parsed as XML");
    assert!(
        deep > 1_000,
        "only {deep} buffers reached the response parsers"
    );
    // The unmutated samples all go the whole way.
    for s in samples() {
        assert!(parse_everything(s.as_bytes()) >= 3, "{}", &s[..200]);
    }
}
