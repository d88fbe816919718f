#![no_main]

use libfuzzer_sys::fuzz_target;
use margay_bgp::wire::{Codec, MAX_MESSAGE_LEN, Message};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the session's AS number width.
    let Some((&flags, body)) = data.split_first() else { return };
    let codec = Codec { four_octet_as: flags & 1 == 1 };
    let Some(msg) = with_header(2, body) else { return };
    if let Ok(m) = Message::decode(&msg, codec) {
        // An UPDATE whose errors RFC 7606 contained (treat-as-withdraw, attribute
        // discard) is not what the peer sent, so it does not round-trip.
        if matches!(&m, Message::Update(u) if !u.errors.is_empty()) {
            return;
        }
        let bytes = m.to_bytes(codec);
        // Re-encoding can grow a message (e.g. AS4_PATH added for large ASNs on a
        // 2-octet session); only messages within the limit must decode again.
        if bytes.len() <= MAX_MESSAGE_LEN {
            let again = Message::decode(&bytes, codec);
            assert_eq!(again.as_ref(), Ok(&m));
        }
    }
});

fn with_header(ty: u8, body: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(body.len() + 19).ok()?;
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&len.to_be_bytes());
    m.push(ty);
    m.extend_from_slice(body);
    Some(m)
}
