//! Build small ONNX models in code: the fixtures zoo's tests generate instead of
//! downloading (an MLP, a bag-of-words text classifier, broken variants).

use prost::Message;
use prost::bytes::Bytes;

use crate::onnx_proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, data_type, tensor_shape_proto, type_proto,
};

/// A dimension for `value_info`: a number or a symbolic name.
pub enum D {
    N(i64),
    S(&'static str),
}

pub fn value_info(name: &str, elem: i32, dims: &[D]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                D::N(n) => tensor_shape_proto::dimension::Value::DimValue(*n),
                D::S(s) => tensor_shape_proto::dimension::Value::DimParam(s.to_string()),
            }),
            denotation: String::new(),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem,
                shape: Some(TensorShapeProto { dim }),
            })),
            denotation: String::new(),
        }),
        doc_string: String::new(),
    }
}

/// A float initializer stored as raw little-endian bytes.
pub fn float_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    TensorProto {
        dims: dims.to_vec(),
        data_type: data_type::FLOAT,
        name: name.into(),
        raw_data: Bytes::from(raw),
        ..Default::default()
    }
}

/// An int64 initializer.
pub fn int64_tensor(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: data_type::INT64,
        name: name.into(),
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

pub fn node(op: &str, inputs: &[&str], outputs: &[&str], attributes: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: format!("{op}_{}", outputs.first().copied().unwrap_or("")),
        op_type: op.into(),
        domain: String::new(),
        attribute: attributes,
    }
}

pub fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: 2, i: v, ..Default::default() }
}

pub fn model(graph: GraphProto, opset: i64) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: opset }],
        producer_name: "zoo-tests".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        metadata_props: vec![StringStringEntryProto { key: "fixture".into(), value: "generated".into() }],
        ..Default::default()
    }
}

pub fn encode(m: &ModelProto) -> Vec<u8> {
    m.encode_to_vec()
}

/// A two-layer MLP `x[N,in] -> relu(x W1 + b1) W2 + b2 -> y[N,out]` with the given
/// weights (row-major `W1[in,hidden]`, `W2[hidden,out]`).
pub fn mlp(w1: &[f32], b1: &[f32], w2: &[f32], b2: &[f32], inputs: i64, hidden: i64, outputs: i64) -> ModelProto {
    let graph = GraphProto {
        name: "mlp".into(),
        node: vec![
            node("MatMul", &["x", "W1"], &["h0"], vec![]),
            node("Add", &["h0", "b1"], &["h1"], vec![]),
            node("Relu", &["h1"], &["h2"], vec![]),
            node("MatMul", &["h2", "W2"], &["o0"], vec![]),
            node("Add", &["o0", "b2"], &["y"], vec![]),
        ],
        initializer: vec![
            float_tensor("W1", &[inputs, hidden], w1),
            float_tensor("b1", &[hidden], b1),
            float_tensor("W2", &[hidden, outputs], w2),
            float_tensor("b2", &[outputs], b2),
        ],
        input: vec![value_info("x", data_type::FLOAT, &[D::S("N"), D::N(inputs)])],
        output: vec![value_info("y", data_type::FLOAT, &[D::S("N"), D::N(outputs)])],
        ..Default::default()
    };
    model(graph, 13)
}

/// A three-layer MLP `x[N,in] -> relu(x W1 + b1) -> relu(. W2 + b2) -> . W3 + b3 -> y[N,out]`
/// (row-major weights), for benchmarks that need more arithmetic than `mlp`.
#[allow(clippy::too_many_arguments)]
pub fn mlp3(
    w1: &[f32],
    b1: &[f32],
    w2: &[f32],
    b2: &[f32],
    w3: &[f32],
    b3: &[f32],
    inputs: i64,
    hidden: i64,
    outputs: i64,
) -> ModelProto {
    let graph = GraphProto {
        name: "mlp3".into(),
        node: vec![
            node("MatMul", &["x", "W1"], &["h0"], vec![]),
            node("Add", &["h0", "b1"], &["h1"], vec![]),
            node("Relu", &["h1"], &["h2"], vec![]),
            node("MatMul", &["h2", "W2"], &["h3"], vec![]),
            node("Add", &["h3", "b2"], &["h4"], vec![]),
            node("Relu", &["h4"], &["h5"], vec![]),
            node("MatMul", &["h5", "W3"], &["o0"], vec![]),
            node("Add", &["o0", "b3"], &["y"], vec![]),
        ],
        initializer: vec![
            float_tensor("W1", &[inputs, hidden], w1),
            float_tensor("b1", &[hidden], b1),
            float_tensor("W2", &[hidden, hidden], w2),
            float_tensor("b2", &[hidden], b2),
            float_tensor("W3", &[hidden, outputs], w3),
            float_tensor("b3", &[outputs], b3),
        ],
        input: vec![value_info("x", data_type::FLOAT, &[D::S("N"), D::N(inputs)])],
        output: vec![value_info("y", data_type::FLOAT, &[D::S("N"), D::N(outputs)])],
        ..Default::default()
    };
    model(graph, 13)
}

/// A bag-of-words classifier over token ids: `logits[b] = sum_t mask[b,t] * W[ids[b,t]]`,
/// inputs `input_ids`, `attention_mask` (int64 `[batch, sequence]`), output
/// `logits` float `[batch, labels]`. `weights` is row-major `[vocab, labels]`.
pub fn bag_of_words_classifier(weights: &[f32], vocab: i64, labels: i64) -> ModelProto {
    let graph = GraphProto {
        name: "bow".into(),
        node: vec![
            node("Gather", &["W", "input_ids"], &["emb"], vec![int_attr("axis", 0)]),
            node("Cast", &["attention_mask"], &["maskf"], vec![int_attr("to", i64::from(data_type::FLOAT))]),
            node("Unsqueeze", &["maskf", "axes"], &["mask3"], vec![]),
            node("Mul", &["emb", "mask3"], &["masked"], vec![]),
            node("ReduceSum", &["masked", "axis1"], &["logits"], vec![int_attr("keepdims", 0)]),
        ],
        initializer: vec![
            float_tensor("W", &[vocab, labels], weights),
            int64_tensor("axes", &[1], &[2]),
            int64_tensor("axis1", &[1], &[1]),
        ],
        input: vec![
            value_info("input_ids", data_type::INT64, &[D::S("batch"), D::S("sequence")]),
            value_info("attention_mask", data_type::INT64, &[D::S("batch"), D::S("sequence")]),
        ],
        output: vec![value_info("logits", data_type::FLOAT, &[D::S("batch"), D::N(labels)])],
        ..Default::default()
    };
    model(graph, 13)
}
