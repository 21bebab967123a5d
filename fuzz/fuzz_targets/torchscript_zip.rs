//! A TorchScript archive: the zip central directory (zip64 too), member limits and
//! the forward signature read from the code, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.pt");
    std::fs::write(&path, data).unwrap();
    let limits = zoo_formats::Limits { max_bundle_size: 64 << 20, ..Default::default() };
    let _ = zoo_formats::torchscript::inspect(&path, &limits);
});
