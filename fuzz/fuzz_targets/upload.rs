//! A whole upload as the server sees it: sniffing, then tar bundles (extraction
//! confined to the work directory), zip (TorchScript), safetensors or ONNX.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let upload = dir.path().join("upload");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(&upload, data).unwrap();
    let limits = zoo_formats::Limits { max_bundle_size: 64 << 20, max_onnx_size: 64 << 20, ..Default::default() };
    let _ = zoo_formats::inspect_upload(&upload, &work, &limits);
    // Nothing may land outside the work directory.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(name == "upload" || name == "work", "a member escaped the work directory: {name:?}");
    }
});
