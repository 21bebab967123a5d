//! The GGUF reader on arbitrary bytes: header, metadata, tensor table and the
//! data section's bounds, then the description the server stores.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(content) = zoo_formats::gguf::parse(data, data.len() as u64, &zoo_formats::Limits::default()) {
        let _ = zoo_formats::gguf::describe(&content);
    }
});
