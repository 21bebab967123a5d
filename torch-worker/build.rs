//! The worker links libtorch without an rpath of its own; point it at the libtorch
//! it was built against, so it runs from the build tree too (the server also sets
//! LD_LIBRARY_PATH when it starts a worker).
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if std::env::var_os("CARGO_FEATURE_TORCH").is_some()
        && let Some(dir) = std::env::var_os("LIBTORCH")
    {
        let lib = std::path::Path::new(&dir).join("lib");
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{}", lib.display());
    }
}
