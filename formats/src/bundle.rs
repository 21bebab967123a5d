//! Multi-file bundles: safe tar extraction (no path leaves the bundle, no links, no
//! devices, bounded member count and size) and the listing of a bundle directory.

use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use zoo_api::BundleFile;

use crate::{Artifact, Error, Limits, Sniffed, Upload, UploadKind};

/// A relative path with only normal components, or `None` when it is absolute,
/// empty, or climbs out with `..`.
pub fn safe_relative(p: &str) -> Option<PathBuf> {
    if p.is_empty() || p.contains('\0') || p.contains('\\') {
        return None;
    }
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

fn bad(rule: &'static str, message: impl Into<String>) -> Error {
    Error::InvalidBundle { rule, message: message.into() }
}

/// Unpack a tar archive into `dest` (which must exist and be empty). Only regular
/// files and directories are accepted; every path must stay inside `dest`.
pub fn extract_tar(archive: &Path, dest: &Path, limits: &Limits) -> Result<Vec<BundleFile>, Error> {
    extract_tar_from(fs::File::open(archive)?, dest, limits)
}

/// [`extract_tar`] from a stream: an upload unpacked as it arrives, without a
/// staged copy of the archive. Reads up to the archive's end marker; what follows
/// it (the padding of the last record) is left unread.
pub fn extract_tar_from(archive: impl Read, dest: &Path, limits: &Limits) -> Result<Vec<BundleFile>, Error> {
    let mut tar = tar::Archive::new(archive);
    let mut files = Vec::new();
    let mut total: u64 = 0;
    let mut members = 0usize;
    let entries = tar.entries().map_err(|e| bad("tar", format!("not a readable tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad("tar", format!("corrupt tar archive: {e}")))?;
        members += 1;
        if members > limits.max_bundle_files {
            return Err(bad("member_count", format!("the archive has more than {} members", limits.max_bundle_files)));
        }
        let raw = entry.path_bytes();
        let name =
            String::from_utf8(raw.to_vec()).map_err(|_| bad("member_name", "an archive member name is not UTF-8"))?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() || kind.is_gnu_longname() {
            continue;
        }
        let rel = safe_relative(&name)
            .ok_or_else(|| bad("member_path", format!("archive member '{name}' points outside the bundle")))?;
        if rel.components().any(|c| c.as_os_str().to_string_lossy().starts_with("._")) {
            // macOS resource forks: skip rather than refuse.
            continue;
        }
        let target = dest.join(&rel);
        if kind.is_dir() {
            fs::create_dir_all(&target)?;
            continue;
        }
        if !kind.is_file() {
            return Err(bad(
                "member_type",
                format!(
                    "archive member '{name}' is a {}; only regular files and directories are accepted",
                    describe_kind(kind)
                ),
            ));
        }
        let size = entry.header().size().map_err(|e| bad("tar", format!("member '{name}': {e}")))?;
        total = total.saturating_add(size);
        if total > limits.max_bundle_size {
            return Err(Error::TooLarge { what: "bundle".into(), size: total, limit: limits.max_bundle_size });
        }
        if let Some(parent) = target.parent() {
            // Parents are created by us from checked components, never followed links:
            // nothing in the tree can be a link because links are refused above.
            fs::create_dir_all(parent)?;
        }
        let mut out = fs::OpenOptions::new().write(true).create_new(true).open(&target).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                bad("duplicate_member", format!("archive member '{name}' appears twice"))
            } else {
                Error::Io(e)
            }
        })?;
        let copied = std::io::copy(&mut (&mut entry).take(size), &mut out)?;
        if copied != size {
            return Err(bad("tar", format!("archive member '{name}' is truncated")));
        }
        files.push(BundleFile { path: rel.to_string_lossy().into_owned(), size });
    }
    if files.is_empty() {
        return Err(bad("empty", "the archive holds no files"));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn describe_kind(kind: tar::EntryType) -> &'static str {
    if kind.is_symlink() {
        "symbolic link"
    } else if kind.is_hard_link() {
        "hard link"
    } else if kind.is_character_special() || kind.is_block_special() {
        "device"
    } else if kind.is_fifo() {
        "fifo"
    } else {
        "special entry"
    }
}

/// Where the model lives in an unpacked bundle: the bundle itself, or its single
/// top-level directory when the archive wrapped everything in one.
pub fn bundle_root(dir: &Path) -> Result<PathBuf, Error> {
    let entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    if entries.len() == 1 && entries[0].file_type()?.is_dir() {
        return Ok(entries[0].path());
    }
    Ok(dir.to_path_buf())
}

/// Read a small JSON/YAML side file of a bundle, bounded by `limit` bytes.
pub fn read_small(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, Error> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if !meta.is_file() {
        return Err(bad("member_type", format!("'{}' is not a regular file", path.display())));
    }
    if meta.len() > limit {
        return Err(Error::TooLarge {
            what: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            size: meta.len(),
            limit,
        });
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    fs::File::open(path)?.take(limit).read_to_end(&mut buf)?;
    Ok(Some(buf))
}

/// A tar archive: unpacked (safely, above), then validated as the bundle its
/// files make (`crate::BUNDLES`).
pub const UPLOAD: UploadKind = UploadKind { accepted: None, sniffed: Sniffed::Tar, inspect: inspect_tar, stored: None };

fn inspect_tar(u: &Upload<'_>) -> Result<Artifact, Error> {
    let files = extract_tar(u.path, u.work_dir, u.limits)?;
    inspect_extracted(u.work_dir, files, u.limits)
}

/// Validate a tar upload once [`extract_tar_from`] has unpacked it into `work_dir`
/// (`files`: what it returned), as [`crate::inspect_upload`] validates a staged one.
pub fn inspect_extracted(work_dir: &Path, files: Vec<BundleFile>, limits: &Limits) -> Result<Artifact, Error> {
    let root = bundle_root(work_dir)?;
    let prefix = root.strip_prefix(work_dir).map(Path::to_path_buf).unwrap_or_default();
    let files = files
        .into_iter()
        .filter_map(|f| {
            let p = Path::new(&f.path).strip_prefix(&prefix).ok()?.to_string_lossy().into_owned();
            Some(BundleFile { path: p, size: f.size })
        })
        .collect();
    crate::inspect_dir(&root, files, limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(safe_relative("a/b.bin"), Some(PathBuf::from("a/b.bin")));
        assert_eq!(safe_relative("./a"), Some(PathBuf::from("a")));
        assert_eq!(safe_relative("../a"), None);
        assert_eq!(safe_relative("a/../../b"), None);
        assert_eq!(safe_relative("/etc/passwd"), None);
        assert_eq!(safe_relative(""), None);
        assert_eq!(safe_relative("."), None);
        assert_eq!(safe_relative("a\\..\\b"), None);
    }
}
