#![no_main]

use libfuzzer_sys::fuzz_target;
use margay_bgp::wire::{Codec, Message};

fuzz_target!(|body: &[u8]| {
    let Some(msg) = with_header(1, body) else { return };
    if let Ok(m) = Message::decode(&msg, Codec::default()) {
        let again = Message::decode(&m.to_bytes(Codec::default()), Codec::default());
        assert_eq!(again.as_ref(), Ok(&m));
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
