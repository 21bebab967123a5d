//! A zip reader for the archives zoo inspects (TorchScript, skops): the central
//! directory only, with limits against zip bombs (member count, total size,
//! compression ratio) and hostile names (absolute, `..`, duplicates). zip64
//! archives (over 4 GiB or 65535 members) are read too. Members are inflated on
//! demand, bounded by what their entry declares.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};

use zoo_api::Format;

use crate::bundle::safe_relative;
use crate::{Error, Limits};

/// Largest ratio of uncompressed to compressed size of a member over 1 MiB.
pub const MAX_RATIO: u64 = 100;

/// One member of the archive, from the central directory.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub method: u16,
    pub compressed: u64,
    pub size: u64,
    pub local_offset: u64,
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"))
}

/// An open archive of one format (which names the errors).
pub struct Archive {
    file: std::fs::File,
    format: Format,
    pub members: Vec<Member>,
}

impl Archive {
    fn invalid(&self, rule: &'static str, message: impl Into<String>) -> Error {
        invalid(self.format, rule, message)
    }

    /// Open `path` and read its central directory, checked against `limits`.
    pub fn open(path: &std::path::Path, format: Format, limits: &Limits) -> Result<Archive, Error> {
        let mut file = std::fs::File::open(path)?;
        let members = members(&mut file, format, limits)?;
        Ok(Archive { file, format, members })
    }

    pub fn find(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// The bytes of a member (at most `limit` of them once inflated).
    pub fn read(&self, m: &Member, limit: u64) -> Result<Vec<u8>, Error> {
        if m.size > limit {
            return Err(
                self.invalid("member_size", format!("'{}' is {} bytes; at most {limit} are read", m.name, m.size))
            );
        }
        let out = self.read_head(m, limit)?;
        if out.len() as u64 != m.size {
            return Err(self.invalid(
                "zip",
                format!("member '{}' is {} bytes, not the {} it declares", m.name, out.len(), m.size),
            ));
        }
        Ok(out)
    }

    /// The first `n` bytes of a member, inflated if needed.
    pub fn read_head(&self, m: &Member, n: u64) -> Result<Vec<u8>, Error> {
        // `&File` reads and seeks, so readers can share the archive.
        let mut file = &self.file;
        file.seek(SeekFrom::Start(m.local_offset))?;
        let mut header = [0u8; 30];
        file.read_exact(&mut header)?;
        if u32_at(&header, 0) != 0x0403_4b50 {
            return Err(self.invalid("zip", format!("member '{}' has no local header", m.name)));
        }
        let skip = u16_at(&header, 26) as i64 + u16_at(&header, 28) as i64;
        file.seek(SeekFrom::Current(skip))?;
        let raw = file.take(m.compressed);
        let mut out = Vec::with_capacity(m.size.min(n) as usize);
        match m.method {
            0 => raw.take(n).read_to_end(&mut out)?,
            _ => flate2::read::DeflateDecoder::new(raw)
                .take(n.min(m.size.saturating_add(1)))
                .read_to_end(&mut out)
                .map_err(|e| invalid(self.format, "zip", format!("member '{}' does not inflate: {e}", m.name)))?,
        };
        Ok(out)
    }
}

fn invalid(format: Format, rule: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid { format, rule, message: message.into() }
}

/// Where the central directory is: (entries, size, offset), from the end records.
fn directory(f: &mut std::fs::File, len: u64, format: Format) -> Result<(u64, u64, u64), Error> {
    let bad = |m: &str| invalid(format, "zip", m);
    if len < 22 {
        return Err(bad("the file is too short to be a zip archive"));
    }
    // The end-of-central-directory record is in the last 64 KiB + 22 bytes.
    let tail_len = len.min(65_557);
    f.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = vec![0u8; tail_len as usize];
    f.read_exact(&mut tail)?;
    let eocd = (0..=tail.len() - 22)
        .rev()
        .find(|&i| u32_at(&tail, i) == 0x0605_4b50)
        .ok_or_else(|| bad("no end of central directory: not a zip archive, or truncated"))?;
    let count = u16_at(&tail, eocd + 10) as u64;
    let cd_size = u32_at(&tail, eocd + 12) as u64;
    let cd_offset = u32_at(&tail, eocd + 16) as u64;
    if count != 0xFFFF && cd_size != 0xFFFF_FFFF && cd_offset != 0xFFFF_FFFF {
        return Ok((count, cd_size, cd_offset));
    }
    // zip64: a locator right before the end record points at the zip64 end record.
    if eocd < 20 || u32_at(&tail, eocd - 20) != 0x0706_4b50 {
        return Err(bad("a zip64 archive without its zip64 end locator"));
    }
    let record = u64_at(&tail, eocd - 20 + 8);
    if record.checked_add(56).is_none_or(|end| end > len) {
        return Err(bad("the zip64 end record lies outside the file"));
    }
    f.seek(SeekFrom::Start(record))?;
    let mut z = [0u8; 56];
    f.read_exact(&mut z)?;
    if u32_at(&z, 0) != 0x0606_4b50 {
        return Err(bad("the zip64 end record is malformed"));
    }
    Ok((u64_at(&z, 32), u64_at(&z, 40), u64_at(&z, 48)))
}

/// The central directory of a zip file, checked against `limits`.
pub fn members(f: &mut std::fs::File, format: Format, limits: &Limits) -> Result<Vec<Member>, Error> {
    let inv = |rule: &'static str, m: String| invalid(format, rule, m);
    let len = f.metadata()?.len();
    let (count, cd_size, cd_offset) = directory(f, len, format)?;
    if count > limits.max_bundle_files as u64 {
        return Err(inv("member_count", format!("{count} members; at most {}", limits.max_bundle_files)));
    }
    if cd_offset.checked_add(cd_size).is_none_or(|end| end > len) || cd_size > 64 * 1024 * 1024 {
        return Err(inv("zip", "the central directory lies outside the file".into()));
    }
    f.seek(SeekFrom::Start(cd_offset))?;
    let mut cd = vec![0u8; cd_size as usize];
    f.read_exact(&mut cd)?;
    let mut out = Vec::with_capacity(count as usize);
    let mut seen = HashSet::new();
    let mut total: u64 = 0;
    let mut i = 0usize;
    for _ in 0..count {
        if i + 46 > cd.len() || u32_at(&cd, i) != 0x0201_4b50 {
            return Err(inv("zip", "a central directory entry is malformed".into()));
        }
        let flags = u16_at(&cd, i + 8);
        let method = u16_at(&cd, i + 10);
        let mut compressed = u32_at(&cd, i + 20) as u64;
        let mut size = u32_at(&cd, i + 24) as u64;
        let (name_len, extra_len, comment_len) =
            (u16_at(&cd, i + 28) as usize, u16_at(&cd, i + 30) as usize, u16_at(&cd, i + 32) as usize);
        let mut local_offset = u32_at(&cd, i + 42) as u64;
        let name_end = i + 46 + name_len;
        if name_end + extra_len + comment_len > cd.len() {
            return Err(inv("zip", "a central directory entry runs past its end".into()));
        }
        let name = std::str::from_utf8(&cd[i + 46..name_end])
            .map_err(|_| inv("member_name", "a member name is not UTF-8".into()))?
            .to_string();
        // zip64 extra field: the 64-bit values of the fields set to 0xFFFFFFFF, in order.
        if size == 0xFFFF_FFFF || compressed == 0xFFFF_FFFF || local_offset == 0xFFFF_FFFF {
            let extra = &cd[name_end..name_end + extra_len];
            let mut j = 0;
            let mut found = None;
            while j + 4 <= extra.len() {
                let (id, n) = (u16_at(extra, j), u16_at(extra, j + 2) as usize);
                if j + 4 + n > extra.len() {
                    break;
                }
                if id == 0x0001 {
                    found = Some(&extra[j + 4..j + 4 + n]);
                    break;
                }
                j += 4 + n;
            }
            let field = found.ok_or_else(|| inv("zip", format!("member '{name}' lacks its zip64 sizes")))?;
            let mut k = 0;
            let mut next = || -> Result<u64, Error> {
                let v = field.get(k..k + 8).ok_or_else(|| inv("zip", format!("member '{name}': short zip64 field")))?;
                k += 8;
                Ok(u64::from_le_bytes(v.try_into().expect("8 bytes")))
            };
            if size == 0xFFFF_FFFF {
                size = next()?;
            }
            if compressed == 0xFFFF_FFFF {
                compressed = next()?;
            }
            if local_offset == 0xFFFF_FFFF {
                local_offset = next()?;
            }
        }
        i = name_end + extra_len + comment_len;
        if flags & 1 != 0 {
            return Err(inv("encrypted", format!("member '{name}' is encrypted")));
        }
        if safe_relative(&name).is_none() || name.starts_with('/') || name.starts_with('\\') {
            return Err(inv("member_path", format!("member '{name}' points outside the archive")));
        }
        if !seen.insert(name.clone()) {
            return Err(inv("duplicate_member", format!("member '{name}' appears twice")));
        }
        if !matches!(method, 0 | 8) {
            return Err(inv("compression", format!("member '{name}' uses compression method {method}")));
        }
        if method == 0 && compressed != size {
            return Err(inv("zip", format!("stored member '{name}' has differing sizes")));
        }
        if size > 1024 * 1024 && size / compressed.max(1) > MAX_RATIO {
            return Err(inv(
                "compression_ratio",
                format!(
                    "member '{name}' expands {}x ({compressed} -> {size} bytes): a zip bomb?",
                    size / compressed.max(1)
                ),
            ));
        }
        if local_offset.checked_add(30).and_then(|o| o.checked_add(compressed)).is_none_or(|end| end > len) {
            return Err(inv("zip", format!("member '{name}' lies outside the file")));
        }
        total = total.saturating_add(size);
        if total > limits.max_bundle_size {
            return Err(inv("total_size", format!("members unpack to more than {} bytes", limits.max_bundle_size)));
        }
        out.push(Member { name, method, compressed, size, local_offset });
    }
    Ok(out)
}
