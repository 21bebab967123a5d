//! The safetensors header parser on arbitrary bytes: the first 8 bytes give the
//! data length it is checked against.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let data_len = u64::from_le_bytes(data[..8].try_into().unwrap()) % (1 << 40);
    let _ = zoo_formats::safetensors::parse_header(&data[8..], data_len, &zoo_formats::Limits::default());
});
