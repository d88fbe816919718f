#![no_main]

use libfuzzer_sys::fuzz_target;
use margay_bgp::wire::{Codec, Message, frame};

fuzz_target!(|data: &[u8]| {
    // As a NOTIFICATION body...
    if let Ok(len) = u16::try_from(data.len() + 19) {
        let mut m = vec![0xff; 16];
        m.extend_from_slice(&len.to_be_bytes());
        m.push(3);
        m.extend_from_slice(data);
        if let Ok(n) = Message::decode(&m, Codec::default()) {
            assert_eq!(Message::decode(&n.to_bytes(Codec::default()), Codec::default()).as_ref(), Ok(&n));
        }
    }
    // ...and as a raw stream through the framer, as the reader task sees it.
    let mut rest = data;
    while let Ok(Some((_, len))) = frame(rest) {
        let _ = Message::decode(&rest[..len], Codec::default());
        rest = &rest[len..];
    }
});
