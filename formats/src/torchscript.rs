//! TorchScript archives (`torch.jit.save`): a zip with `<name>/data.pkl`,
//! `<name>/code/__torch__...py`, `<name>/constants.pkl` and `<name>/version`.
//!
//! Validation reads the zip's central directory only, with limits against zip
//! bombs (member count, total size, compression ratio) and hostile names (absolute,
//! `..`, duplicates, members outside the one top-level folder). The signature comes
//! from the `forward` definition in the TorchScript code, read as text. No pickle
//! is ever loaded here.

use std::path::Path;

use zoo_api::{DType, Dim, Format, Signature, Task, TensorSpec, TorchscriptInfo, ValueKind};

use crate::zip::{Archive, Member};
use crate::{Artifact, Engine, Error, Limits, Sniffed, Stored, Upload, UploadKind};

/// Largest code file read for the signature.
const MAX_CODE: u64 = 4 * 1024 * 1024;

fn invalid(rule: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid { format: Format::Torchscript, rule, message: message.into() }
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
    let archive = Archive::open(path, Format::Torchscript, limits)?;
    let members = archive.members.clone();
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
        .map(|m| archive.read(m, 64))
        .transpose()?
        .map(|b| String::from_utf8_lossy(&b).trim().to_string());
    // The saved module's class is the first GLOBAL of data.pkl (read as bytes,
    // never unpickled); its code file holds the forward that is the model's.
    let pickle = members.iter().find(|m| m.name == format!("{root}/data.pkl")).expect("checked above");
    let head = archive.read_head(pickle, 512)?;
    let (module, class) = root_class(&head).unwrap_or_default();
    let wanted = format!("{root}/code/{}.py", module.replace('.', "/"));
    let mut ordered = code.clone();
    ordered.sort_by_key(|m| (m.name != wanted, m.name.matches('/').count(), m.name.len()));
    let mut found = None;
    for m in &ordered {
        let text = String::from_utf8(archive.read(m, MAX_CODE)?)
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
    if limits.torchscript_op_check {
        // Every source file libtorch would compile, wherever it is in the archive.
        for m in members.iter().filter(|m| m.name.ends_with(".py")) {
            let text = String::from_utf8_lossy(&archive.read(m, MAX_CODE)?).into_owned();
            if let Some((what, why)) = crate::torchscript_ops::first_refused(&text) {
                return Err(invalid(
                    "operator",
                    format!(
                        "'{}' uses {what}, which {why}: zoo does not serve TorchScript that does file, network or \
                         process I/O or loads native code",
                        m.name
                    ),
                ));
            }
        }
    }
    let info = TorchscriptInfo {
        archive_name: root,
        version,
        code_files: code.iter().map(|m| m.name.clone()).collect(),
        members: members.len(),
    };
    Ok((inputs, outputs, info))
}

/// The spec of a `forward` argument or result of TorchScript type `ty`. A `Tensor`
/// names no dtype or shape (requests send float32 unless they name a dtype);
/// numbers are rank-0, lists rank-1.
fn spec(name: &str, ty: &str, default: Option<&str>) -> TensorSpec {
    let ty = ty.trim();
    let inner = ty.strip_prefix("Optional[").and_then(|r| r.strip_suffix(']')).map(str::trim).unwrap_or(ty);
    let (dtype, shape) = match inner {
        "float" => (DType::Float64, Some(vec![])),
        "int" => (DType::Int64, Some(vec![])),
        "bool" => (DType::Bool, Some(vec![])),
        "str" => (DType::String, Some(vec![])),
        "List[int]" => (DType::Int64, Some(vec![Dim::Unknown(None)])),
        "List[float]" => (DType::Float64, Some(vec![Dim::Unknown(None)])),
        "List[bool]" => (DType::Bool, Some(vec![Dim::Unknown(None)])),
        _ => (DType::Other, None),
    };
    // What zoo cannot build from a request: tuples, dicts, lists of other things.
    let kind = match inner {
        _ if inner.starts_with("Dict[") => ValueKind::Map,
        _ if shape.is_none() && inner.contains('[') && inner != "List[Tensor]" => ValueKind::Sequence,
        _ => ValueKind::Tensor,
    };
    let doc = match default {
        Some(d) => format!("TorchScript default: {}", d.trim()),
        None => String::new(),
    };
    TensorSpec {
        name: name.to_string(),
        kind,
        dtype,
        shape,
        type_text: ty.to_string(),
        doc,
        optional: default.is_some() || inner != ty,
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
            let (ty, default) = match ty.split_once('=') {
                Some((t, d)) => (t, Some(d)),
                None => (ty, None),
            };
            spec(name.trim(), ty, default)
        })
        .collect();
    let after = &rest[close + 1..];
    let ret = after.split_once("->").map(|(_, r)| r.split(':').next().unwrap_or("").trim()).unwrap_or("Tensor");
    let outputs = match ret.strip_prefix("Tuple[").and_then(|r| r.strip_suffix(']')) {
        Some(items) => {
            split_args(items).iter().enumerate().map(|(i, t)| spec(&format!("output_{i}"), t, None)).collect()
        }
        None => vec![spec("output_0", ret, None)],
    };
    Some((inputs, outputs))
}

/// A zip archive: TorchScript is the only zip zoo takes.
pub const UPLOAD: UploadKind = UploadKind {
    stored: Some(Stored { format: Format::Torchscript, file_name: "model.pt", engine: Engine::Torchscript }),
    accepted: Some("a TorchScript archive (torch.jit.save, .pt)"),
    sniffed: Sniffed::Zip,
    inspect: inspect_upload,
};

fn inspect_upload(u: &Upload<'_>) -> Result<Artifact, Error> {
    match inspect(u.path, u.limits) {
        Ok((inputs, outputs, info)) => Ok(Artifact {
            signature: Signature {
                inputs,
                outputs,
                torchscript: Some(info),
                ..Signature::empty(Format::Torchscript, false)
            },
            task: Task::Tensor,
            labels: vec![],
            model_path: u.path.to_path_buf(),
            bundle_dir: None,
        }),
        Err(Error::Invalid { rule: "not_torchscript", message, .. }) => Err(Error::UnknownFormat(format!(
            "a zip archive that is not a TorchScript model ({message}); send other bundles as a tar archive \
             (`zoo deploy DIR` does this)"
        ))),
        Err(e) => Err(e),
    }
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
        assert_eq!(inputs[2].shape, Some(vec![]));
        assert!(!inputs[0].optional);
        assert_eq!(outputs.len(), 2);
        let code = "  def forward(self: __torch__.M,\n    x: Tensor,\n    state: Tensor=CONSTANTS.c0,\n    mask: Optional[Tensor]) -> Tensor:\n";
        let (inputs, _) = forward_signature(code).unwrap();
        assert_eq!(inputs[1].type_text, "Tensor");
        assert!(inputs[1].optional && inputs[2].optional && !inputs[0].optional);
        assert_eq!(inputs[1].doc, "TorchScript default: CONSTANTS.c0");
        assert!(forward_signature("def other(self): pass").is_none());
    }
}
