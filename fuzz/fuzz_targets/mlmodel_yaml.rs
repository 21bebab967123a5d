//! The MLmodel reader on arbitrary text, in a bundle holding only that MLmodel.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("MLmodel"), data).unwrap();
    let _ = zoo_formats::mlflow::inspect(dir.path());
});
