//! Packing a model directory into one tar archive for upload, without a copy of it
//! on disk: [`measure`] makes the archive once into a hash and a byte count (the
//! upload's `x-zoo-sha256` and `Content-Length`), [`write_tar`] makes the same bytes
//! again as they are sent. Headers are deterministic, so both passes agree; a file
//! that changes between them makes the server refuse the upload (its sha256 no
//! longer matches), never store something else.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A directory as the archive it packs into.
#[derive(Debug, Clone)]
pub struct Packed {
    /// The regular files under the directory, relative, sorted (hidden entries
    /// skipped; links followed: the archive carries their content).
    pub files: Vec<PathBuf>,
    /// Hex sha256 of the archive.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Walk `dir` and make its archive into a hash and a count.
pub fn measure(dir: &Path) -> std::io::Result<Packed> {
    let mut files = Vec::new();
    collect(dir, Path::new(""), &mut files)?;
    files.sort();
    let sink = write_tar(dir, &files, HashCount { hasher: Sha256::new(), size: 0 })?;
    Ok(Packed { files, sha256: hex::encode(sink.hasher.finalize()), size: sink.size })
}

/// Write the archive of `files` (from [`measure`]) under `dir` into `out`.
pub fn write_tar<W: Write>(dir: &Path, files: &[PathBuf], out: W) -> std::io::Result<W> {
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Deterministic);
    for rel in files {
        builder.append_path_with_name(dir.join(rel), rel)?;
    }
    builder.into_inner()
}

struct HashCount {
    hasher: Sha256,
    size: u64,
}

impl Write for HashCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(buf);
        self.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = rel.join(&name);
        // Follows links on the client side: the archive carries their content.
        let meta = std::fs::metadata(entry.path())?;
        if meta.is_dir() {
            collect(root, &path, out)?;
        } else if meta.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measured_archive_is_the_one_written() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bundle");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("model.onnx"), vec![7u8; 70_000]).unwrap();
        std::fs::write(dir.join("sub/config.json"), b"{}").unwrap();
        std::fs::write(dir.join(".hidden"), b"x").unwrap();
        let packed = measure(&dir).unwrap();
        assert_eq!(packed.files, [PathBuf::from("model.onnx"), PathBuf::from("sub/config.json")]);
        let bytes = write_tar(&dir, &packed.files, Vec::new()).unwrap();
        assert_eq!(bytes.len() as u64, packed.size);
        assert_eq!(hex::encode(Sha256::digest(&bytes)), packed.sha256);
        let mut members = Vec::new();
        for e in tar::Archive::new(&bytes[..]).entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut content).unwrap();
            members.push((name, content.len()));
        }
        assert_eq!(members, [("model.onnx".to_string(), 70_000), ("sub/config.json".to_string(), 2)]);
    }
}
