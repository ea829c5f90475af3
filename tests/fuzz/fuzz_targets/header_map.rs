//! The proxy-wasm header-map wire format: any bytes a plugin passes either decode or are
//! refused without a panic, and what decodes survives encoding and decoding again.
#![no_main]

use lateen_wasm::abi::headers::{decode_map, encode_map};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(map) = decode_map(data) {
        let again = decode_map(&encode_map(&map)).expect("an encoded map decodes");
        assert_eq!(again, map);
    }
});
