//! The ONNX validator on arbitrary protobuf bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ =
        zoo_formats::onnx::inspect(prost::bytes::Bytes::copy_from_slice(data), None, &zoo_formats::Limits::default());
});
