//! The operator check of TorchScript uploads: the code of a `torch.jit.save`
//! archive is TorchScript source that libtorch compiles at load, and a few of the
//! operators it may call reach outside the model: `torch.from_file` reads any file
//! and, with `shared=True`, creates and overwrites files; `torch.save` writes one;
//! the `c10d` and `_c10d_functional` families talk to other processes over the
//! network; the `_nnapi` class loads a native library. An archive whose code names
//! one of them, or an operator namespace or custom class outside the ones
//! ordinary exported models use, is refused at upload.
//!
//! This is a second line of defence that gives an early, clear answer; the
//! worker's sandbox is the boundary. The scan is deliberately coarse: the code is
//! tokenized the way TorchScript reads it (comments dropped, line continuations
//! joined, string literals decoded with their escapes and adjacent literals
//! joined), so `getattr(torch, "sa" "ve")`, `f = torch.save`, `ops.aten.save` and
//! `annotate("__torch__.torch.classes._nnapi.Compilation", ...)` are all caught; a
//! method of the model's own that is called `save` is refused too.

/// Names that are refused wherever they appear as a name or as a part of a
/// string: file I/O, network, native code, raw memory.
const FORBIDDEN: &[(&str, &str)] = &[
    ("from_file", "reads and writes files (aten::from_file)"),
    ("save", "writes files (aten::save)"),
    ("_nnapi", "loads a native library (_nnapi.Compilation)"),
    ("c10d", "talks to other processes over the network (c10d)"),
    ("_c10d_functional", "talks to other processes over the network (_c10d_functional)"),
    ("_c10d_functional_autograd", "talks to other processes over the network (_c10d_functional_autograd)"),
    ("_dtensor", "talks to other processes over the network (_dtensor)"),
    ("symm_mem", "shares memory with other processes (symm_mem)"),
    ("inductor", "makes raw memory views (inductor)"),
];

/// Operator namespaces (`ops.<ns>.<op>`) that ordinary exported models use.
const ALLOWED_NAMESPACES: &[&str] = &[
    "aten",
    "prim",
    "quantized",
    "_quantized",
    "sparse",
    "quantization",
    "mkldnn",
    "mkldnn_prepacked",
    "onednn",
    "mkl",
    "profiler",
    "onnx",
    "prepacked",
    "quantized_decomposed",
];

/// Custom classes (`__torch__.torch.classes.<ns>.<Class>`) that ship with libtorch
/// for quantized and optimized models.
const ALLOWED_CLASSES: &[&str] = &[
    "quantized.LinearPackedParamsBase",
    "quantized.Conv2dPackedParamsBase",
    "quantized.Conv3dPackedParamsBase",
    "quantized.EmbeddingPackedParamsBase",
    "sparse.LinearPackedParamsBase",
    "rnn.CellParamsBase",
    "mkldnn.ConvOpContext",
    "profiler._RecordFunction",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Name(String),
    Str(String),
    Punct(char),
}

/// TorchScript source as the tokens that matter here.
fn tokenize(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut out: Vec<Token> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '\\' && chars.get(i + 1) == Some(&'\n') {
            i += 2;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' {
            let (s, next) = string(&chars, i);
            // Adjacent literals are one string, as in Python.
            match out.last_mut() {
                Some(Token::Str(prev)) => prev.push_str(&s),
                _ => out.push(Token::Str(s)),
            }
            i = next;
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect();
            // A prefixed literal (r"...", b'...'): the prefix is not a name.
            if matches!(chars.get(i), Some('"' | '\''))
                && name.len() <= 2
                && name.chars().all(|c| "rRbBuUfF".contains(c))
            {
                continue;
            }
            out.push(Token::Name(name));
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            out.push(Token::Punct(c));
            i += 1;
        }
    }
    out
}

/// A string literal starting at `start` (its quote), decoded; and where it ends.
fn string(chars: &[char], start: usize) -> (String, usize) {
    let quote = chars[start];
    let triple = chars.get(start + 1) == Some(&quote) && chars.get(start + 2) == Some(&quote);
    let mut i = start + if triple { 3 } else { 1 };
    let mut s = String::new();
    while i < chars.len() {
        let c = chars[i];
        if triple {
            if c == quote && chars.get(i + 1) == Some(&quote) && chars.get(i + 2) == Some(&quote) {
                return (s, i + 3);
            }
        } else if c == quote || c == '\n' {
            return (s, i + 1);
        }
        if c == '\\' && i + 1 < chars.len() {
            let e = chars[i + 1];
            i += 2;
            match e {
                'n' => s.push('\n'),
                't' => s.push('\t'),
                'r' => s.push('\r'),
                '\n' => {}
                '0'..='7' => {
                    let mut v = e.to_digit(8).unwrap_or(0);
                    for _ in 0..2 {
                        match chars.get(i).and_then(|d| d.to_digit(8)) {
                            Some(d) => {
                                v = v * 8 + d;
                                i += 1;
                            }
                            None => break,
                        }
                    }
                    s.push(char::from_u32(v).unwrap_or('\u{fffd}'));
                }
                'x' => {
                    let hex: String = chars[i..chars.len().min(i + 2)].iter().collect();
                    if let Ok(v) = u32::from_str_radix(&hex, 16) {
                        s.push(char::from_u32(v).unwrap_or('\u{fffd}'));
                        i += hex.len();
                    }
                }
                other => s.push(other),
            }
            continue;
        }
        s.push(c);
        i += 1;
    }
    (s, i)
}

fn forbidden(name: &str) -> Option<&'static str> {
    FORBIDDEN.iter().find(|(n, _)| *n == name).map(|(_, why)| *why)
}

/// The first operator, namespace or class in `code` that zoo refuses: what it
/// is called and why.
pub fn first_refused(code: &str) -> Option<(String, String)> {
    let tokens = tokenize(code);
    let name = |i: usize| match tokens.get(i) {
        Some(Token::Name(n)) => Some(n.as_str()),
        _ => None,
    };
    let punct = |i: usize, c: char| tokens.get(i) == Some(&Token::Punct(c));
    for (i, t) in tokens.iter().enumerate() {
        match t {
            Token::Name(n) => {
                if let Some(why) = forbidden(n) {
                    return Some((n.clone(), why.into()));
                }
                // ops.<ns>
                if n == "ops"
                    && punct(i + 1, '.')
                    && let Some(ns) = name(i + 2)
                    && !ALLOWED_NAMESPACES.contains(&ns)
                {
                    return Some((format!("ops.{ns}"), format!("operator namespace '{ns}' is not one models use")));
                }
                // getattr(ops, "<ns>")
                if n == "getattr"
                    && punct(i + 1, '(')
                    && name(i + 2) == Some("ops")
                    && punct(i + 3, ',')
                    && let Some(Token::Str(ns)) = tokens.get(i + 4)
                    && !ALLOWED_NAMESPACES.contains(&ns.as_str())
                {
                    return Some((format!("ops.{ns}"), format!("operator namespace '{ns}' is not one models use")));
                }
                // __torch__.torch.classes.<ns>.<Class>
                if n == "classes" && i >= 2 && name(i - 2) == Some("torch") && punct(i - 1, '.') && punct(i + 1, '.') {
                    // <ns>.<Class>: what follows is a method (`__new__`) or nothing.
                    let mut parts = Vec::new();
                    let mut j = i + 2;
                    while let Some(p) = name(j) {
                        parts.push(p);
                        if parts.len() == 2 || !punct(j + 1, '.') {
                            break;
                        }
                        j += 2;
                    }
                    if let Some(refused) = refused_class(&parts.join(".")) {
                        return Some(refused);
                    }
                }
            }
            // A string is where getattr names and annotate types hide; prose (an
            // error message) has spaces other than after commas and is skipped.
            Token::Str(s) if code_like(s) => {
                for part in s.split(['.', ' ', ',', '[', ']', '(', ')']) {
                    if let Some(why) = forbidden(part) {
                        return Some((format!("\"{s}\""), why.into()));
                    }
                }
                if let Some((_, class)) = s.split_once("torch.classes.")
                    && let Some(refused) = refused_class(class.split([' ', ',', ']', ')']).next().unwrap_or(""))
                {
                    return Some(refused);
                }
            }
            Token::Str(_) | Token::Punct(_) => {}
        }
    }
    None
}

/// A name, dotted path or type expression rather than prose.
fn code_like(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    chars
        .iter()
        .enumerate()
        .all(|(i, c)| c.is_alphanumeric() || "_.[](),".contains(*c) || (*c == ' ' && i > 0 && chars[i - 1] == ','))
}

fn refused_class(class: &str) -> Option<(String, String)> {
    (!ALLOWED_CLASSES.contains(&class)).then(|| {
        (format!("torch.classes.{class}"), format!("custom class '{class}' is not one that libtorch ships for models"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_io_operators_however_they_are_written() {
        let refused = |code: &str| first_refused(code).map(|(what, _)| what);
        assert_eq!(refused("return torch.from_file(\"/x\", False, 20, dtype=0)").as_deref(), Some("from_file"));
        assert_eq!(refused("torch.save(x, \"/tmp/y\")").as_deref(), Some("save"));
        assert_eq!(refused("ops.aten.save(x, p)").as_deref(), Some("save"));
        assert_eq!(refused("f = torch.save\nf(x, p)").as_deref(), Some("save"));
        assert_eq!(refused("torch . \\\n  save(x, p)").as_deref(), Some("save"));
        assert!(refused("getattr(torch, \"sa\" \"ve\")(x, p)").is_some());
        assert!(refused("getattr(torch, \"\\163ave\")(x, p)").is_some());
        assert_eq!(refused("ops.c10d.allreduce_(x)").as_deref(), Some("ops.c10d"));
        assert_eq!(refused("ops.mystery.op(x)").as_deref(), Some("ops.mystery"));
        assert_eq!(refused("getattr(ops, \"mystery\").op(x)").as_deref(), Some("ops.mystery"));
        assert!(refused("annotate(\"__torch__.torch.classes._nnapi.Compilation\", x)").is_some());
        assert!(refused("annotate(\"Tuple[int, __torch__.torch.classes.c10d.ProcessGroup]\", x)").is_some());
        assert_eq!(
            refused("c = __torch__.torch.classes.my_ns.Thing.__new__(__torch__.torch.classes.my_ns.Thing)").as_deref(),
            Some("torch.classes.my_ns.Thing")
        );
    }

    #[test]
    fn ordinary_models_pass() {
        let mlp = "class M(Module):\n  __parameters__ = [\"weight\", ]\n  def forward(self: __torch__.M,\n    x: Tensor) -> Tensor:\n    _0 = torch.relu(torch.linear(x, self.weight, self.bias))\n    # save nothing: a comment\n    return ops.prim.data(_0)\n";
        assert_eq!(first_refused(mlp), None);
        let quantized = "  _packed_params : __torch__.torch.classes.quantized.LinearPackedParamsBase\n  def forward(self, x: Tensor) -> Tensor:\n    return ops.quantized.linear_dynamic(x, self._packed_params)\n";
        assert_eq!(first_refused(quantized), None);
        let silero = "    _1 = getattr(self, \"0\")\n    ops.prim.RaiseException(\"Input audio chunk is too short\", \"builtins.ValueError\")\n    saved = annotate(List[Tensor], [])\n    ops.prim.RaiseException(\"cannot save state\")\n";
        assert_eq!(first_refused(silero), None);
    }
}
