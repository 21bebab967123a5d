//! TorchScript archives (`torch.jit.save`): a zip with `<name>/data.pkl`,
//! `<name>/code/__torch__...py`, `<name>/constants.pkl` and `<name>/version`.
//!
//! Validation reads the zip's central directory only, with limits against zip
//! bombs (member count, total size, compression ratio) and hostile names (absolute,
//! `..`, duplicates, members outside the one top-level folder). The signature comes
//! from the `forward` definition in the TorchScript code, read as text. No pickle
//! is ever loaded here.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use zoo_api::{DType, Format, TensorSpec, TorchscriptInfo, ValueKind};

use crate::bundle::safe_relative;
use crate::{Error, Limits};

/// Largest ratio of uncompressed to compressed size of a member.
pub const MAX_RATIO: u64 = 100;
/// Largest code file read for the signature.
const MAX_CODE: u64 = 4 * 1024 * 1024;

fn invalid(rule: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid { format: Format::Torchscript, rule, message: message.into() }
}

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

/// The central directory of a zip file, checked against `limits`.
pub fn members(f: &mut std::fs::File, limits: &Limits) -> Result<Vec<Member>, Error> {
    let len = f.metadata()?.len();
    if len < 22 {
        return Err(invalid("zip", "the file is too short to be a zip archive"));
    }
    // The end-of-central-directory record is in the last 64 KiB + 22 bytes.
    let tail_len = len.min(65_557);
    f.seek(SeekFrom::Start(len - tail_len))?;
    let mut tail = vec![0u8; tail_len as usize];
    f.read_exact(&mut tail)?;
    let eocd = (0..=tail.len() - 22)
        .rev()
        .find(|&i| u32_at(&tail, i) == 0x0605_4b50)
        .ok_or_else(|| invalid("zip", "no end of central directory: not a zip archive, or truncated"))?;
    let count = u16_at(&tail, eocd + 10) as u64;
    let cd_size = u32_at(&tail, eocd + 12) as u64;
    let cd_offset = u32_at(&tail, eocd + 16) as u64;
    if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        return Err(invalid("zip64", "zip64 archives (over 4 GiB or 65535 members) are not accepted yet"));
    }
    if count as usize > limits.max_bundle_files {
        return Err(invalid("member_count", format!("{count} members; at most {}", limits.max_bundle_files)));
    }
    if cd_offset.checked_add(cd_size).is_none_or(|end| end > len) {
        return Err(invalid("zip", "the central directory lies outside the file"));
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
            return Err(invalid("zip", "a central directory entry is malformed"));
        }
        let flags = u16_at(&cd, i + 8);
        let method = u16_at(&cd, i + 10);
        let compressed = u32_at(&cd, i + 20) as u64;
        let size = u32_at(&cd, i + 24) as u64;
        let (name_len, extra_len, comment_len) =
            (u16_at(&cd, i + 28) as usize, u16_at(&cd, i + 30) as usize, u16_at(&cd, i + 32) as usize);
        let local_offset = u32_at(&cd, i + 42) as u64;
        let name_end = i + 46 + name_len;
        if name_end + extra_len + comment_len > cd.len() {
            return Err(invalid("zip", "a central directory entry runs past its end"));
        }
        let name = std::str::from_utf8(&cd[i + 46..name_end])
            .map_err(|_| invalid("member_name", "a member name is not UTF-8"))?
            .to_string();
        i = name_end + extra_len + comment_len;
        if flags & 1 != 0 {
            return Err(invalid("encrypted", format!("member '{name}' is encrypted")));
        }
        if compressed == 0xFFFF_FFFF || size == 0xFFFF_FFFF || local_offset == 0xFFFF_FFFF {
            return Err(invalid("zip64", format!("member '{name}' needs zip64, which is not accepted yet")));
        }
        if safe_relative(&name).is_none() || name.starts_with('/') {
            return Err(invalid("member_path", format!("member '{name}' points outside the archive")));
        }
        if !seen.insert(name.clone()) {
            return Err(invalid("duplicate_member", format!("member '{name}' appears twice")));
        }
        if !matches!(method, 0 | 8) {
            return Err(invalid("compression", format!("member '{name}' uses compression method {method}")));
        }
        if method == 0 && compressed != size {
            return Err(invalid("zip", format!("stored member '{name}' has differing sizes")));
        }
        if size > 1024 * 1024 && size / compressed.max(1) > MAX_RATIO {
            return Err(invalid(
                "compression_ratio",
                format!(
                    "member '{name}' expands {}x ({compressed} -> {size} bytes): a zip bomb?",
                    size / compressed.max(1)
                ),
            ));
        }
        if local_offset.checked_add(30 + compressed).is_none_or(|end| end > len) {
            return Err(invalid("zip", format!("member '{name}' lies outside the file")));
        }
        total = total.saturating_add(size);
        if total > limits.max_bundle_size {
            return Err(invalid("total_size", format!("members unpack to more than {} bytes", limits.max_bundle_size)));
        }
        out.push(Member { name, method, compressed, size, local_offset });
    }
    Ok(out)
}

/// The bytes of a member (at most `limit` of them once inflated).
fn read_member(f: &mut std::fs::File, m: &Member, limit: u64) -> Result<Vec<u8>, Error> {
    if m.size > limit {
        return Err(invalid("code_size", format!("'{}' is {} bytes; at most {limit} are read", m.name, m.size)));
    }
    f.seek(SeekFrom::Start(m.local_offset))?;
    let mut header = [0u8; 30];
    f.read_exact(&mut header)?;
    if u32_at(&header, 0) != 0x0403_4b50 {
        return Err(invalid("zip", format!("member '{}' has no local header", m.name)));
    }
    let skip = u16_at(&header, 26) as i64 + u16_at(&header, 28) as i64;
    f.seek(SeekFrom::Current(skip))?;
    let raw = f.take(m.compressed);
    let mut out = Vec::with_capacity(m.size as usize);
    match m.method {
        0 => raw.take(limit).read_to_end(&mut out)?,
        _ => flate2::read::DeflateDecoder::new(raw)
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| invalid("zip", format!("member '{}' does not inflate: {e}", m.name)))?,
    };
    if out.len() as u64 != m.size {
        return Err(invalid(
            "zip",
            format!("member '{}' is {} bytes, not the {} it declares", m.name, out.len(), m.size),
        ));
    }
    Ok(out)
}

/// The first bytes of a member, inflated if needed.
fn read_member_head(f: &mut std::fs::File, m: &Member, n: u64) -> Result<Vec<u8>, Error> {
    if m.size <= n {
        return read_member(f, m, n);
    }
    f.seek(SeekFrom::Start(m.local_offset))?;
    let mut header = [0u8; 30];
    f.read_exact(&mut header)?;
    let skip = u16_at(&header, 26) as i64 + u16_at(&header, 28) as i64;
    f.seek(SeekFrom::Current(skip))?;
    let raw = f.take(m.compressed);
    let mut out = Vec::new();
    match m.method {
        0 => raw.take(n).read_to_end(&mut out)?,
        _ => flate2::read::DeflateDecoder::new(raw)
            .take(n)
            .read_to_end(&mut out)
            .map_err(|e| invalid("zip", format!("member '{}' does not inflate: {e}", m.name)))?,
    };
    Ok(out)
}

/// Module and class of a pickle's first GLOBAL opcode (`c<module>\n<name>\n`), which
/// `torch.jit.save` writes for the saved module right after the protocol header.
fn root_class(pickle: &[u8]) -> Option<(String, String)> {
    let rest = pickle.strip_prefix(b"\x80\x02c")?;
    let text = std::str::from_utf8(&rest[..rest.len().min(400)]).ok().or_else(|| {
        let end = rest.iter().take(400).position(|b| !b.is_ascii()).unwrap_or(rest.len().min(400));
        std::str::from_utf8(&rest[..end]).ok()
    })?;
    let mut lines = text.splitn(3, '\n');
    let (module, class) = (lines.next()?, lines.next()?);
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    (ok(module) && ok(class) && module.starts_with("__torch__")).then(|| (module.to_string(), class.to_string()))
}

/// Validate a TorchScript archive; its `forward` arguments become the inputs.
pub fn inspect(path: &Path, limits: &Limits) -> Result<(Vec<TensorSpec>, Vec<TensorSpec>, TorchscriptInfo), Error> {
    let mut f = std::fs::File::open(path)?;
    let members = members(&mut f, limits)?;
    let root = members
        .first()
        .and_then(|m| m.name.split('/').next())
        .ok_or_else(|| invalid("layout", "the archive is empty"))?
        .to_string();
    if let Some(m) = members.iter().find(|m| m.name.split('/').next() != Some(root.as_str())) {
        return Err(invalid("layout", format!("member '{}' is outside the archive's folder '{root}'", m.name)));
    }
    let has = |suffix: &str| members.iter().any(|m| m.name == format!("{root}/{suffix}"));
    for required in ["data.pkl", "version"] {
        if !has(required) {
            return Err(invalid("not_torchscript", format!("'{root}/{required}' is missing")));
        }
    }
    let code: Vec<&Member> = members
        .iter()
        .filter(|m| m.name.starts_with(&format!("{root}/code/__torch__")) && m.name.ends_with(".py"))
        .collect();
    if code.is_empty() {
        return Err(invalid("not_torchscript", format!("'{root}/code/__torch__*.py' is missing")));
    }
    let version = members
        .iter()
        .find(|m| m.name == format!("{root}/version"))
        .map(|m| read_member(&mut f, m, 64))
        .transpose()?
        .map(|b| String::from_utf8_lossy(&b).trim().to_string());
    // The saved module's class is the first GLOBAL of data.pkl (read as bytes,
    // never unpickled); its code file holds the forward that is the model's.
    let pickle = members.iter().find(|m| m.name == format!("{root}/data.pkl")).expect("checked above");
    let head = read_member_head(&mut f, pickle, 512)?;
    let (module, class) = root_class(&head).unwrap_or_default();
    let wanted = format!("{root}/code/{}.py", module.replace('.', "/"));
    let mut ordered = code.clone();
    ordered.sort_by_key(|m| (m.name != wanted, m.name.matches('/').count(), m.name.len()));
    let mut found = None;
    for m in &ordered {
        let text = String::from_utf8(read_member(&mut f, m, MAX_CODE)?)
            .map_err(|_| invalid("code", format!("'{}' is not UTF-8 text", m.name)))?;
        let class_code = text
            .find(&format!("class {class}("))
            .filter(|_| !class.is_empty())
            .map(|i| &text[i..])
            .map(|rest| rest[1..].find("\nclass ").map_or(rest, |j| &rest[..j + 1]));
        if let Some(sig) = class_code.and_then(forward_signature).or_else(|| forward_signature(&text)) {
            found = Some(sig);
            break;
        }
    }
    let (inputs, outputs) =
        found.ok_or_else(|| invalid("code", "no forward(self, ...) definition in the TorchScript code"))?;
    let info = TorchscriptInfo {
        archive_name: root,
        version,
        code_files: code.iter().map(|m| m.name.clone()).collect(),
        members: members.len(),
    };
    Ok((inputs, outputs, info))
}

fn spec(name: &str, ty: &str) -> TensorSpec {
    let ty = ty.trim();
    let dtype = match ty {
        "float" => DType::Float64,
        "int" => DType::Int64,
        "bool" => DType::Bool,
        "str" => DType::String,
        // A TorchScript `Tensor` carries no dtype or shape in its type.
        _ => DType::Other,
    };
    TensorSpec {
        name: name.to_string(),
        kind: ValueKind::Tensor,
        dtype,
        shape: None,
        type_text: ty.to_string(),
        doc: String::new(),
    }
}

/// Split `a: T, b: Dict[str, Tensor]` at the commas outside brackets.
fn split_args(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0usize, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().map(str::trim).filter(|a| !a.is_empty()).collect()
}

/// `def forward(self: ..., x: Tensor, ...) -> T:` as input and output specs.
pub fn forward_signature(code: &str) -> Option<(Vec<TensorSpec>, Vec<TensorSpec>)> {
    let start = code.find("def forward(")? + "def forward(".len();
    let rest = &code[start..];
    let mut depth = 1i32;
    let close = rest.char_indices().find_map(|(i, c)| {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            _ => {}
        }
        (depth == 0).then_some(i)
    })?;
    let args = split_args(&rest[..close]);
    let inputs = args
        .iter()
        .skip(1) // self
        .map(|a| {
            let (name, ty) = a.split_once(':').unwrap_or((a, "Tensor"));
            let ty = ty.split('=').next().unwrap_or(ty);
            spec(name.trim(), ty)
        })
        .collect();
    let after = &rest[close + 1..];
    let ret = after.split_once("->").map(|(_, r)| r.split(':').next().unwrap_or("").trim()).unwrap_or("Tensor");
    let outputs = match ret.strip_prefix("Tuple[").and_then(|r| r.strip_suffix(']')) {
        Some(items) => split_args(items).iter().enumerate().map(|(i, t)| spec(&format!("output_{i}"), t)).collect(),
        None => vec![spec("output_0", ret)],
    };
    Some((inputs, outputs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_arguments_and_returns() {
        let code = "class M(Module):\n  def forward(self: __torch__.M,\n    x: Tensor,\n    state: Dict[str, Tensor],\n    sr: int) -> Tuple[Tensor, Tensor]:\n    return x\n";
        let (inputs, outputs) = forward_signature(code).unwrap();
        let names: Vec<(&str, &str)> = inputs.iter().map(|i| (i.name.as_str(), i.type_text.as_str())).collect();
        assert_eq!(names, [("x", "Tensor"), ("state", "Dict[str, Tensor]"), ("sr", "int")]);
        assert_eq!(inputs[2].dtype, DType::Int64);
        assert_eq!(outputs.len(), 2);
        assert!(forward_signature("def other(self): pass").is_none());
    }
}
