//! Hostile and malformed artifacts built in code, one per validation rule: the
//! corpus that zoo's tests send through every layer (the format readers, the HTTP
//! upload) and that seeds the fuzzers. Each case says what zoo must answer.

use prost::bytes::Bytes;
use serde_json::json;

use crate::build;
use crate::onnx_proto::StringStringEntryProto;

/// What zoo must answer to a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// 422 `invalid_artifact`, naming this format (`bundle` for the archive) and rule.
    Invalid { format: &'static str, rule: &'static str },
    /// 422 `unknown_format`.
    Unknown,
}

/// One hostile artifact.
pub struct Case {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    pub expect: Expect,
}

fn invalid(format: &'static str, rule: &'static str) -> Expect {
    Expect::Invalid { format, rule }
}

pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // set_path refuses '..'; write the raw name like a hostile client would.
        let raw = &mut h.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A zip archive of stored (uncompressed) members, names written as given, like a
/// hostile client could.
pub fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in files {
        let offset = out.len() as u32;
        let (crc, len, n) = (crc32(data), data.len() as u32, name.len() as u16);
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        for v in [crc, len, len] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        for v in [crc, len, len] {
            central.extend_from_slice(&v.to_le_bytes());
        }
        central.extend_from_slice(&n.to_le_bytes());
        central.extend_from_slice(&[0u8; 12]);
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let (cd_offset, cd_size, count) = (out.len() as u32, central.len() as u32, files.len() as u16);
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&cd_size.to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// A zip archive rewritten in zip64 form: each central entry's sizes and offset
/// moved into a zip64 extra field, and zip64 end records before the end record.
pub fn zip64(zip: &[u8]) -> Vec<u8> {
    let u16_at = |i: usize| u16::from_le_bytes([zip[i], zip[i + 1]]) as usize;
    let u32_at = |i: usize| u32::from_le_bytes(zip[i..i + 4].try_into().unwrap()) as u64;
    let eocd = zip.len() - 22;
    let (count, cd_offset) = (u16_at(eocd + 10), u32_at(eocd + 16) as usize);
    let mut out = zip[..cd_offset].to_vec();
    let mut central = Vec::new();
    let mut i = cd_offset;
    for _ in 0..count {
        let (n, extra, comment) = (u16_at(i + 28), u16_at(i + 30), u16_at(i + 32));
        let mut entry = zip[i..i + 46].to_vec();
        let (compressed, size, offset) = (u32_at(i + 20), u32_at(i + 24), u32_at(i + 42));
        entry[20..28].copy_from_slice(&[0xFF; 8]);
        entry[42..46].copy_from_slice(&[0xFF; 4]);
        entry[30..32].copy_from_slice(&28u16.to_le_bytes());
        entry.extend_from_slice(&zip[i + 46..i + 46 + n]);
        entry.extend_from_slice(&1u16.to_le_bytes());
        entry.extend_from_slice(&24u16.to_le_bytes());
        for v in [size, compressed, offset] {
            entry.extend_from_slice(&v.to_le_bytes());
        }
        central.extend(entry);
        i += 46 + n + extra + comment;
    }
    let (cd_start, cd_size) = (out.len() as u64, central.len() as u64);
    out.extend(central);
    let record = out.len() as u64;
    out.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
    out.extend_from_slice(&44u64.to_le_bytes());
    out.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&(count as u64).to_le_bytes());
    out.extend_from_slice(&(count as u64).to_le_bytes());
    out.extend_from_slice(&cd_size.to_le_bytes());
    out.extend_from_slice(&cd_start.to_le_bytes());
    out.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&record.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
    out.extend_from_slice(&[0xFF; 8]);
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

pub fn safetensors_file(header: &serde_json::Value, data: &[u8]) -> Vec<u8> {
    let h = header.to_string().into_bytes();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

/// An MLP whose first weight lives in an external file named `location`.
pub fn external_mlp(location: &str) -> Vec<u8> {
    let mut m = build::mlp(&[0.5; 32], &[0.1; 8], &[0.25; 24], &[0.0; 3], 4, 8, 3);
    let w = &mut m.graph.as_mut().unwrap().initializer[0];
    w.raw_data = Default::default();
    w.data_location = 1;
    w.external_data = vec![
        StringStringEntryProto { key: "location".into(), value: location.into() },
        StringStringEntryProto { key: "offset".into(), value: "0".into() },
        StringStringEntryProto { key: "length".into(), value: "128".into() },
    ];
    build::encode(&m)
}

/// A `.npy` file: header dict, then `data`.
pub fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut h = format!("{{'descr': {descr}, 'fortran_order': False, 'shape': {shape}, }}");
    while (h.len() + 11) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((h.len() as u16).to_le_bytes());
    out.extend(h.as_bytes());
    out.extend(data);
    out
}

pub const NODE_DESCR: &str = "[('left_child', '<i8'), ('right_child', '<i8'), ('feature', '<i8'), ('threshold', '<f8'), \
     ('impurity', '<f8'), ('n_node_samples', '<i8'), ('weighted_n_node_samples', '<f8'), \
     ('missing_go_to_left', '|u1'), ('', '|V7')]";

/// Tree node records: (left, right, feature, threshold).
pub fn nodes(rows: &[(i64, i64, i64, f64)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (l, r, f, t) in rows {
        out.extend(l.to_le_bytes());
        out.extend(r.to_le_bytes());
        out.extend(f.to_le_bytes());
        out.extend(t.to_le_bytes());
        out.extend([0u8; 24]);
        out.extend([1u8]);
        out.extend([0u8; 7]);
    }
    out
}

/// A skops archive of a DecisionTreeRegressor on 2 features (x0 <= 0.5 ? 1.0 : 2.0),
/// with `edit` applied to its schema first.
pub fn skops_tree(
    edit: impl Fn(&mut serde_json::Value),
    node_rows: &[(i64, i64, i64, f64)],
    nodes_descr: &str,
) -> Vec<u8> {
    let j = |c: &str| json!({"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode", "content": c, "is_json": true});
    let arr = |file: &str| json!({"__class__": "ndarray", "__module__": "numpy", "__loader__": "NdArrayNode", "type": "numpy", "file": file});
    let tree = json!({
        "__class__": "Tree", "__module__": "sklearn.tree._tree", "__loader__": "TreeNode",
        "__reduce__": {"args": {"__loader__": "TupleNode", "content": [j("2"), arr("ncls.npy"), j("1")]}},
        "content": {"__class__": "dict", "__module__": "builtins", "__loader__": "DictNode", "content": {
            "max_depth": j("1"), "node_count": j(&node_rows.len().to_string()), "nodes": arr("nodes.npy"), "values": arr("values.npy")}}
    });
    let mut schema = json!({
        "__class__": "DecisionTreeRegressor", "__module__": "sklearn.tree._classes", "__loader__": "ObjectNode",
        "content": {"__class__": "dict", "__module__": "builtins", "__loader__": "DictNode", "content": {
            "n_features_in_": j("2"), "n_outputs_": j("1"), "tree_": tree, "_sklearn_version": j("\"1.9.1\"")}},
        "protocol": 2, "_skops_version": "0.16.0"
    });
    edit(&mut schema);
    let values: Vec<u8> = [1.5f64, 1.0, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let schema = serde_json::to_vec(&schema).unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("nodes.npy", npy(nodes_descr, &format!("({},)", node_rows.len()), &nodes(node_rows))),
        ("values.npy", npy("'<f8'", "(3, 1, 1)", &values)),
        ("ncls.npy", npy("'<i8'", "(1,)", &1i64.to_le_bytes())),
        ("schema.json", schema),
    ];
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (*n, d.as_slice())).collect();
    zip_of(&refs)
}

/// A valid two-leaf tree for `skops_tree`.
pub const GOOD_TREE: &[(i64, i64, i64, f64)] = &[(1, 2, 0, 0.5), (-1, -1, -2, -2.0), (-1, -1, -2, -2.0)];

/// An MLmodel of the sklearn flavor in skops format, on two double columns.
pub fn sklearn_mlmodel() -> &'static str {
    "flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n    model_path: model.skops\n    predict_fn: predict\n  \
     sklearn:\n    pickled_model: model.skops\n    serialization_format: skops\n    sklearn_version: 1.9.1\n\
     signature:\n  inputs: '[{\"type\": \"double\", \"name\": \"a\"}, {\"type\": \"double\", \"name\": \"b\"}]'\n  \
     outputs: '[{\"type\": \"tensor\", \"tensor-spec\": {\"dtype\": \"float64\", \"shape\": [-1]}}]'\n"
}

/// An MLflow bundle (tar) of the sklearn flavor around a skops archive.
pub fn sklearn_bundle(skops: &[u8]) -> Vec<u8> {
    tar_of(&[("MLmodel", sklearn_mlmodel().as_bytes()), ("model.skops", skops)])
}

/// An MLflow bundle (tar) of the onnx flavor whose data file is `data`.
pub fn mlflow_onnx_bundle(mlmodel_data: &str, extra_mlmodel: &str) -> Vec<u8> {
    let mlmodel = format!(
        "{extra_mlmodel}flavors:\n  onnx:\n    data: {mlmodel_data}\n  python_function:\n    loader_module: mlflow.onnx\n"
    );
    let mlp = tiny_mlp();
    tar_of(&[("MLmodel", mlmodel.as_bytes()), ("model.onnx", &mlp)])
}

/// The tiny valid MLP (4 -> 8 -> 3) these cases break.
pub fn tiny_mlp() -> Vec<u8> {
    build::encode(&build::mlp(&[0.5; 32], &[0.1; 8], &[0.25; 24], &[0.0; 3], 4, 8, 3))
}

const FORWARD: &[u8] = b"class M(Module):\n  def forward(self: __torch__.M,\n    x: Tensor) -> Tensor:\n    return x\n";

/// One hostile or malformed artifact per rule, for every format zoo reads.
pub fn corpus() -> Vec<Case> {
    let mut v = Vec::new();
    let mut case = |name: &'static str, bytes: Vec<u8>, expect: Expect| v.push(Case { name, bytes, expect });
    let mlp = tiny_mlp();

    // ONNX: a truncated protobuf, a dangling graph, external data outside the bundle.
    case("onnx-truncated", mlp[..mlp.len() / 2].to_vec(), invalid("onnx", "protobuf"));
    let mut m = build::mlp(&[0.5; 32], &[0.1; 8], &[0.25; 24], &[0.0; 3], 4, 8, 3);
    m.graph.as_mut().expect("graph").node.remove(2);
    case("onnx-dangling-input", build::encode(&m), invalid("onnx", "graph"));
    let mut m = build::mlp(&[0.5; 32], &[0.1; 8], &[0.25; 24], &[0.0; 3], 4, 8, 3);
    m.graph.as_mut().expect("graph").initializer[0].raw_data = Bytes::from(vec![0u8; 10]);
    case("onnx-short-initializer", build::encode(&m), invalid("onnx", "tensor"));
    let weights = vec![0u8; 128];
    case(
        "onnx-external-data-escapes",
        tar_of(&[("model.onnx", &external_mlp("../../etc/passwd")), ("weights.bin", &weights)]),
        invalid("onnx", "external_data"),
    );
    case("onnx-external-data-in-single-file", external_mlp("weights.bin"), invalid("onnx", "external_data"));
    // The same escape through the places a validator can forget: a sparse
    // initializer, a sparse tensor attribute, a model-local function's attribute.
    let escaping = || {
        let mut t = build::float_tensor("w_sparse", &[4], &[0.0; 4]);
        t.raw_data = Default::default();
        t.data_location = 1;
        t.external_data = vec![
            StringStringEntryProto { key: "location".into(), value: "../../etc/passwd".into() },
            StringStringEntryProto { key: "length".into(), value: "16".into() },
        ];
        t
    };
    let sparse = |values| crate::onnx_proto::SparseTensorProto {
        values: Some(values),
        indices: Some(build::int64_tensor("idx", &[4], &[0, 1, 2, 3])),
        dims: vec![4],
    };
    let mut m = build::mlp(&[0.5; 32], &[0.1; 8], &[0.25; 24], &[0.0; 3], 4, 8, 3);
    m.graph.as_mut().expect("graph").sparse_initializer.push(sparse(escaping()));
    case(
        "onnx-sparse-initializer-escapes",
        tar_of(&[("model.onnx", &build::encode(&m)), ("weights.bin", &weights)]),
        invalid("onnx", "external_data"),
    );
    let mut m = build::mlp(&[0.5; 32], &[0.1; 8], &[0.25; 24], &[0.0; 3], 4, 8, 3);
    m.graph.as_mut().expect("graph").node[0].attribute.push(crate::onnx_proto::AttributeProto {
        name: "sparse_value".into(),
        r#type: 11,
        sparse_tensor: Some(sparse(escaping())),
        ..Default::default()
    });
    case(
        "onnx-sparse-attribute-escapes",
        tar_of(&[("model.onnx", &build::encode(&m)), ("weights.bin", &weights)]),
        invalid("onnx", "external_data"),
    );
    let mut m = build::mlp(&[0.5; 32], &[0.1; 8], &[0.25; 24], &[0.0; 3], 4, 8, 3);
    m.functions.push(crate::onnx_proto::FunctionProto {
        name: "leak".into(),
        domain: "zoo.test".into(),
        node: vec![crate::onnx_proto::NodeProto {
            op_type: "Constant".into(),
            output: vec!["c".into()],
            attribute: vec![crate::onnx_proto::AttributeProto {
                name: "value".into(),
                r#type: 4,
                t: Some(escaping()),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    });
    case(
        "onnx-function-attribute-escapes",
        tar_of(&[("model.onnx", &build::encode(&m)), ("weights.bin", &weights)]),
        invalid("onnx", "external_data"),
    );
    let noise: Vec<u8> = (0..4096u32).map(|i| ((i.wrapping_mul(2654435761) >> 13) as u8) | 1).collect();
    case("random-bytes", noise, Expect::Unknown);

    // safetensors: header length, header JSON, dtypes, offsets, overlaps, coverage, shapes.
    let t =
        |dtype: &str, shape: &[u64], b: u64, e: u64| json!({"dtype": dtype, "shape": shape, "data_offsets": [b, e]});
    let good = safetensors_file(&json!({"w": t("F32", &[2, 2], 0, 16)}), &[0u8; 16]);
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    case("safetensors-header-claims-2^60-bytes", huge, invalid("safetensors", "header_length"));
    case("safetensors-truncated", good[..good.len() - 4].to_vec(), invalid("safetensors", "offsets"));
    let mut not_json = safetensors_file(&json!({"w": t("F32", &[1], 0, 4)}), &[0u8; 4]);
    not_json[12] = b'!';
    case("safetensors-header-not-json", not_json, invalid("safetensors", "header_json"));
    case(
        "safetensors-unknown-dtype",
        safetensors_file(&json!({"w": t("Q4", &[1], 0, 4)}), &[0u8; 4]),
        invalid("safetensors", "dtype"),
    );
    let overlap = json!({"a": t("F32", &[2], 0, 8), "b": t("F32", &[2], 4, 12)});
    case("safetensors-overlapping-tensors", safetensors_file(&overlap, &[0u8; 12]), invalid("safetensors", "overlap"));
    let gap = json!({"a": t("F32", &[1], 0, 4), "b": t("F32", &[1], 8, 12)});
    case("safetensors-gap", safetensors_file(&gap, &[0u8; 12]), invalid("safetensors", "coverage"));
    let out_of_range = json!({"w": t("F32", &[4], 1 << 40, (1 << 40) + 16)});
    case(
        "safetensors-offset-out-of-range",
        safetensors_file(&out_of_range, &[0u8; 16]),
        invalid("safetensors", "offsets"),
    );
    case(
        "safetensors-shape-mismatch",
        safetensors_file(&json!({"w": t("F32", &[3], 0, 8)}), &[0u8; 8]),
        invalid("safetensors", "shape"),
    );

    // TorchScript zips: zip slip, absolute and duplicate members, a zip bomb, layout.
    let ts = |extra: (&str, &[u8])| {
        zip_of(&[("m/data.pkl", b"\x80\x02"), ("m/code/__torch__.py", FORWARD), ("m/version", b"3"), extra])
    };
    case("torchscript-zip-slip", ts(("../../etc/cron.d/x", b"boom")), invalid("torchscript", "member_path"));
    case("torchscript-absolute-member", ts(("/etc/passwd", b"boom")), invalid("torchscript", "member_path"));
    case("torchscript-duplicate-member", ts(("m/version", b"4")), invalid("torchscript", "duplicate_member"));
    case("torchscript-member-outside-folder", ts(("other/file", b"x")), invalid("torchscript", "layout"));
    let mut bomb = ts(("m/constants.pkl", b"x"));
    let pos = bomb.windows(4).rposition(|w| w == [0x50, 0x4b, 0x01, 0x02]).expect("central entry");
    bomb[pos + 10] = 8;
    bomb[pos + 24..pos + 28].copy_from_slice(&4_000_000_000u32.to_le_bytes());
    case("torchscript-zip-bomb", bomb, invalid("torchscript", "compression_ratio"));
    let no_forward = zip_of(&[("m/data.pkl", b""), ("m/code/__torch__.py", b"x = 1"), ("m/version", b"3")]);
    case("torchscript-no-forward", no_forward, invalid("torchscript", "code"));
    // TorchScript code that calls operators reaching outside the model.
    let code = |body: &str| {
        let code = format!("class M(Module):\n  def forward(self: __torch__.M,\n    x: Tensor) -> Tensor:\n{body}");
        zip_of(&[("m/data.pkl", b"\x80\x02"), ("m/code/__torch__.py", code.as_bytes()), ("m/version", b"3")])
    };
    case(
        "torchscript-reads-a-file",
        code("    return torch.from_file(\"/var/lib/zoo/admin.key\", False, 20, dtype=0)\n"),
        invalid("torchscript", "operator"),
    );
    case(
        "torchscript-writes-a-file",
        code("    torch.save(x, \"/root/.bashrc\")\n    return x\n"),
        invalid("torchscript", "operator"),
    );
    case(
        "torchscript-save-by-getattr",
        code("    getattr(torch, \"sa\" \"ve\")(x, \"/tmp/x\")\n    return x\n"),
        invalid("torchscript", "operator"),
    );
    case("torchscript-network-op", code("    return ops.c10d.allreduce_(x)\n"), invalid("torchscript", "operator"));
    case(
        "torchscript-custom-namespace",
        code("    return ops.my_native_lib.run(x)\n"),
        invalid("torchscript", "operator"),
    );
    let other_file = zip_of(&[
        ("m/data.pkl", b"\x80\x02"),
        ("m/code/__torch__.py", FORWARD),
        (
            "m/code/__torch__/helpers.py",
            b"def f(x: Tensor) -> Tensor:\n  return torch.from_file(\"/etc/shadow\", True, 8)\n",
        ),
        ("m/version", b"3"),
    ]);
    case("torchscript-op-in-another-code-file", other_file, invalid("torchscript", "operator"));

    // Bundles (tar): members leaving the bundle, duplicates, links.
    case(
        "bundle-member-escapes",
        tar_of(&[("model.onnx", &mlp), ("../escape.txt", b"x")]),
        invalid("bundle", "member_path"),
    );
    case("bundle-absolute-member", tar_of(&[("/tmp/zoo-abs.txt", b"x")]), invalid("bundle", "member_path"));
    case(
        "bundle-duplicate-member",
        tar_of(&[("model.onnx", &mlp), ("model.onnx", &mlp)]),
        invalid("bundle", "duplicate_member"),
    );
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "model.onnx", "/etc/passwd").expect("tar in memory");
    case("bundle-symlink-member", b.into_inner().expect("tar in memory"), invalid("bundle", "member_type"));

    // MLflow: paths out of the bundle, YAML bombs and tags.
    case("mlflow-data-escapes", mlflow_onnx_bundle("../../etc/passwd", ""), invalid("mlflow", "path"));
    case("mlflow-absolute-data", mlflow_onnx_bundle("/etc/passwd", ""), invalid("mlflow", "path"));
    let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b]\n";
    case("mlflow-yaml-alias-bomb", mlflow_onnx_bundle("model.onnx", bomb), invalid("mlflow", "yaml"));
    case(
        "mlflow-yaml-python-tag",
        mlflow_onnx_bundle("model.onnx", "x: !!python/object/apply:os.system [ls]\n"),
        invalid("mlflow", "yaml"),
    );

    // scikit-learn (skops): trees that loop or point out of range, array files
    // outside the archive, pickled object arrays, arrays claiming huge shapes.
    let skops = |nodes: &[(i64, i64, i64, f64)], descr: &str| sklearn_bundle(&skops_tree(|_| {}, nodes, descr));
    case(
        "skops-tree-loop",
        skops(&[(1, 0, 0, 0.5), (-1, -1, -2, -2.0), (-1, -1, -2, -2.0)], NODE_DESCR),
        invalid("mlflow", "tree"),
    );
    case(
        "skops-tree-child-out-of-range",
        skops(&[(1, 9, 0, 0.5), (-1, -1, -2, -2.0), (-1, -1, -2, -2.0)], NODE_DESCR),
        invalid("mlflow", "tree"),
    );
    case(
        "skops-tree-feature-out-of-range",
        skops(&[(1, 2, 7, 0.5), (-1, -1, -2, -2.0), (-1, -1, -2, -2.0)], NODE_DESCR),
        invalid("mlflow", "tree"),
    );
    case("skops-object-array", skops(GOOD_TREE, "'|O'"), invalid("mlflow", "dtype"));
    let escape = |s: &mut serde_json::Value| {
        s["content"]["content"]["tree_"]["content"]["content"]["nodes"]["file"] = "../../etc/passwd".into()
    };
    case(
        "skops-array-file-escapes",
        sklearn_bundle(&skops_tree(escape, GOOD_TREE, NODE_DESCR)),
        invalid("mlflow", "path"),
    );
    let huge = |s: &mut serde_json::Value| s["protocol"] = 99.into();
    case(
        "skops-unknown-protocol",
        sklearn_bundle(&skops_tree(huge, GOOD_TREE, NODE_DESCR)),
        invalid("mlflow", "protocol"),
    );

    // GGUF: every length, count, type and offset a reader trusts.
    use crate::gguf::write::{Meta, file, tiny_llama};
    let llama = tiny_llama();
    case("gguf-truncated-in-metadata", llama[..28].to_vec(), invalid("gguf", "truncated"));
    case("gguf-truncated-in-data", llama[..llama.len() - 100].to_vec(), invalid("gguf", "tensor_offset"));
    let mut v1 = llama.clone();
    v1[4] = 1;
    case("gguf-version-1", v1, invalid("gguf", "version"));
    let mut counts = llama.clone();
    counts[8..16].copy_from_slice(&(1u64 << 62).to_le_bytes());
    case("gguf-tensor-count-2^62", counts, invalid("gguf", "tensor_count"));
    let mut key = llama.clone();
    key[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    case("gguf-key-length-2^64", key, invalid("gguf", "string_length"));
    let w = || vec![("w", vec![8u64], vec![0.0f32; 8])];
    let mut array = file(&[("tokenizer.ggml.token_type", Meta::I32s(vec![7, 7]))], &w());
    let at = array.windows(8).rposition(|x| x == 2u64.to_le_bytes()).unwrap_or(0);
    array[at..at + 8].copy_from_slice(&(1u64 << 61).to_le_bytes());
    case("gguf-array-claims-2^61-elements", array, invalid("gguf", "array_length"));
    let mut nested = file(&[("a", Meta::I32s(vec![1]))], &w());
    let at = 24 + 8 + 1 + 4; // the header, the key, its type: the array's element type
    nested[at..at + 4].copy_from_slice(&9u32.to_le_bytes());
    case("gguf-array-of-arrays", nested, invalid("gguf", "metadata_type"));
    case(
        "gguf-tensor-past-the-end",
        file(&[], &[("w", vec![1 << 20], vec![0.0; 8])]),
        invalid("gguf", "tensor_offset"),
    );
    case(
        "gguf-dimensions-overflow",
        file(&[], &[("w", vec![1 << 40, 1 << 40], vec![0.0; 8])]),
        invalid("gguf", "tensor_dims"),
    );
    case("gguf-odd-alignment", file(&[("general.alignment", Meta::U32(3))], &w()), invalid("gguf", "alignment"));
    v
}
