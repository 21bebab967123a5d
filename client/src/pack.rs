//! Packing a model directory into one tar archive for upload.

use std::path::{Path, PathBuf};

/// Tar the regular files under `dir` (relative paths, hidden entries skipped)
/// into `dest`. Returns the number of files.
pub fn pack_dir(dir: &Path, dest: &Path) -> std::io::Result<usize> {
    let file = std::fs::File::create(dest)?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    builder.mode(tar::HeaderMode::Deterministic);
    let mut files = Vec::new();
    collect(dir, Path::new(""), &mut files)?;
    files.sort();
    for rel in &files {
        builder.append_path_with_name(dir.join(rel), rel)?;
    }
    builder.into_inner()?.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(files.len())
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
