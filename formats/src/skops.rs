//! scikit-learn models in the skops format (MLflow's `sklearn` flavor with
//! `serialization_format: skops`), read as data: no pickle, no Python.
//!
//! A skops file is a zip of `schema.json` (a tree of typed nodes describing the
//! estimator's attributes) and `.npy` arrays. zoo reads the tree, refuses any
//! estimator outside the supported set by its class path before touching its
//! arrays, and turns the supported ones into a `Model` the server's sklearn runtime
//! evaluates: `StandardScaler` steps in a `Pipeline`, then LogisticRegression,
//! LinearRegression, Ridge, or decision-tree / random-forest / gradient-boosting
//! classifiers and regressors. Trees are bounds-checked (children after their
//! parent, features in range), because skops itself does not trust them.

use std::path::Path;

use serde_json::{Map, Value};
use zoo_api::{DType, Dim, Format, MlflowInfo, Signature, SkopsInfo, TensorSpec, ValueKind};

use crate::zip::{Archive, Member};
use crate::{Error, Limits};

/// The largest `schema.json` read.
const MAX_SCHEMA: u64 = 64 * 1024 * 1024;
/// Most trees in one ensemble.
const MAX_TREES: usize = 100_000;

fn invalid(rule: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid { format: Format::Mlflow, rule, message: format!("skops: {}", message.into()) }
}

/// Estimators zoo runs natively, by class path.
pub const SUPPORTED: &[&str] = &[
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.linear_model._base.LinearRegression",
    "sklearn.linear_model._ridge.Ridge",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.ensemble._gb.GradientBoostingClassifier",
    "sklearn.ensemble._gb.GradientBoostingRegressor",
];

/// Class labels of a classifier.
#[derive(Debug, Clone, PartialEq)]
pub enum Classes {
    Int(Vec<i64>),
    Str(Vec<String>),
}

impl Classes {
    pub fn len(&self) -> usize {
        match self {
            Classes::Int(v) => v.len(),
            Classes::Str(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn json(&self) -> Vec<Value> {
        match self {
            Classes::Int(v) => v.iter().map(|c| Value::from(*c)).collect(),
            Classes::Str(v) => v.iter().map(|c| Value::from(c.as_str())).collect(),
        }
    }
}

/// One node of a fitted tree (`sklearn.tree._tree.Tree`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TreeNode {
    /// Children, or -1 for a leaf.
    pub left: i64,
    pub right: i64,
    pub feature: i64,
    pub threshold: f64,
    /// Where a missing value (NaN) goes.
    pub missing_left: bool,
}

/// A fitted tree: its nodes and `values[node]` (classes or one regression value).
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    pub nodes: Vec<TreeNode>,
    /// `node_count x width`, row-major.
    pub values: Vec<f64>,
    pub width: usize,
}

impl Tree {
    /// The leaf a row reaches. Features are compared as float32 (as scikit-learn
    /// casts its input) against the float64 thresholds; NaN follows the node's flag.
    pub fn leaf(&self, x: &[f64]) -> usize {
        let mut i = 0usize;
        loop {
            let n = &self.nodes[i];
            if n.left < 0 {
                return i;
            }
            let v = x[n.feature as usize] as f32;
            let left = if v.is_nan() { n.missing_left } else { (v as f64) <= n.threshold };
            i = if left { n.left as usize } else { n.right as usize };
        }
    }

    /// The values of the leaf a row reaches.
    pub fn predict(&self, x: &[f64]) -> &[f64] {
        let leaf = self.leaf(x);
        &self.values[leaf * self.width..(leaf + 1) * self.width]
    }
}

/// A transformation step of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// StandardScaler: `(x - mean) / scale`, each part only when fitted with it.
    Scale { mean: Option<Vec<f64>>, scale: Option<Vec<f64>> },
}

/// The final estimator.
#[derive(Debug, Clone, PartialEq)]
pub enum Estimator {
    /// LinearRegression, Ridge: `x . coef + intercept`.
    Linear {
        coef: Vec<f64>,
        intercept: f64,
    },
    /// LogisticRegression: one row of `coef` per class (one row for binary).
    Logistic {
        classes: Classes,
        coef: Vec<Vec<f64>>,
        intercept: Vec<f64>,
    },
    DecisionTreeClassifier {
        classes: Classes,
        tree: Tree,
    },
    DecisionTreeRegressor {
        tree: Tree,
    },
    RandomForestClassifier {
        classes: Classes,
        trees: Vec<Tree>,
    },
    RandomForestRegressor {
        trees: Vec<Tree>,
    },
    /// Raw score `init + learning_rate * sum(stage trees)`; `stages[i][k]`.
    GradientBoostingClassifier {
        classes: Classes,
        init: Vec<f64>,
        learning_rate: f64,
        stages: Vec<Vec<Tree>>,
    },
    GradientBoostingRegressor {
        init: f64,
        learning_rate: f64,
        stages: Vec<Tree>,
    },
}

impl Estimator {
    pub fn classes(&self) -> Option<&Classes> {
        match self {
            Estimator::Logistic { classes, .. }
            | Estimator::DecisionTreeClassifier { classes, .. }
            | Estimator::RandomForestClassifier { classes, .. }
            | Estimator::GradientBoostingClassifier { classes, .. } => Some(classes),
            _ => None,
        }
    }

    /// Missing values are routed by trees and forests; the others refuse them, as
    /// scikit-learn does.
    pub fn accepts_nan(&self) -> bool {
        matches!(
            self,
            Estimator::DecisionTreeClassifier { .. }
                | Estimator::DecisionTreeRegressor { .. }
                | Estimator::RandomForestClassifier { .. }
                | Estimator::RandomForestRegressor { .. }
        )
    }
}

/// A model ready to evaluate: transformations, then the estimator.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub transforms: Vec<Transform>,
    pub estimator: Estimator,
    pub n_features: usize,
    pub feature_names: Vec<String>,
}

/// A plain value of a JsonNode.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

/// A numpy array read from a `.npy` member, in C order.
#[derive(Debug, Clone, PartialEq)]
enum Data {
    F64(Vec<f64>),
    I64(Vec<i64>),
    Str(Vec<String>),
    Nodes(Vec<TreeNode>),
}

#[derive(Debug, Clone, PartialEq)]
struct Array {
    shape: Vec<usize>,
    data: Data,
}

impl Array {
    fn f64s(self, what: &str) -> Result<Vec<f64>, Error> {
        match self.data {
            Data::F64(v) => Ok(v),
            Data::I64(v) => Ok(v.into_iter().map(|i| i as f64).collect()),
            _ => Err(invalid("dtype", format!("{what} is not numeric"))),
        }
    }
}

/// Reads nodes of `schema.json`, loading arrays from the archive on demand.
struct Reader {
    archive: Archive,
    /// Bytes of arrays read so far, against the bundle limit.
    read: std::cell::Cell<u64>,
    limit: u64,
}

fn loader(node: &Value) -> &str {
    node.get("__loader__").and_then(Value::as_str).unwrap_or("")
}

/// `module.Class` of a node.
fn class_path(node: &Value) -> String {
    let module = node.get("__module__").and_then(Value::as_str).unwrap_or("");
    let class = node.get("__class__").and_then(Value::as_str).unwrap_or("");
    format!("{module}.{class}")
}

impl Reader {
    /// The attributes of an ObjectNode (its state as a DictNode).
    fn attrs<'a>(&self, node: &'a Value) -> Result<&'a Map<String, Value>, Error> {
        if loader(node) != "ObjectNode" {
            return Err(invalid("schema", format!("expected an object, found a {}", loader(node))));
        }
        let state =
            node.get("content").ok_or_else(|| invalid("schema", format!("{} has no state", class_path(node))))?;
        dict(state)
    }

    fn attr<'a>(&self, node: &'a Value, name: &str) -> Result<&'a Value, Error> {
        self.attrs(node)?
            .get(name)
            .ok_or_else(|| invalid("schema", format!("{} has no attribute '{name}'", class_path(node))))
    }

    fn scalar(&self, node: &Value) -> Result<Scalar, Error> {
        match loader(node) {
            "JsonNode" => json_scalar(node),
            "NdArrayNode" => {
                // A numpy scalar: a 0-d array.
                let a = self.array(node)?;
                if a.shape.iter().product::<usize>() != 1 {
                    return Err(invalid("schema", "expected a single value, found an array"));
                }
                Ok(match a.data {
                    Data::F64(v) => Scalar::Float(v[0]),
                    Data::I64(v) => Scalar::Int(v[0]),
                    Data::Str(v) => Scalar::Str(v[0].clone()),
                    Data::Nodes(_) => return Err(invalid("schema", "expected a value, found tree nodes")),
                })
            }
            other => Err(invalid("schema", format!("expected a value, found a {other}"))),
        }
    }

    fn float(&self, node: &Value, what: &str) -> Result<f64, Error> {
        match self.scalar(node)? {
            Scalar::Float(f) => Ok(f),
            Scalar::Int(i) => Ok(i as f64),
            _ => Err(invalid("schema", format!("{what} is not a number"))),
        }
    }

    fn int(&self, node: &Value, what: &str) -> Result<i64, Error> {
        match self.scalar(node)? {
            Scalar::Int(i) => Ok(i),
            _ => Err(invalid("schema", format!("{what} is not an integer"))),
        }
    }

    /// A numpy array: from its `.npy` member, or (object arrays) from the node.
    fn array(&self, node: &Value) -> Result<Array, Error> {
        if loader(node) != "NdArrayNode" {
            return Err(invalid("schema", format!("expected an array, found a {}", loader(node))));
        }
        match node.get("type").and_then(Value::as_str) {
            Some("numpy") => {
                let file = node
                    .get("file")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("schema", "an array has no file"))?;
                self.npy(file)
            }
            Some("json") => {
                // An object array of strings (feature names, string class labels).
                let items = node
                    .get("content")
                    .and_then(Value::as_array)
                    .ok_or_else(|| invalid("schema", "an object array has no content"))?;
                let strings = items
                    .iter()
                    .map(|i| match json_scalar(i)? {
                        Scalar::Str(s) => Ok(s),
                        Scalar::Int(n) => Ok(n.to_string()),
                        _ => Err(invalid("dtype", "an object array holds other things than strings")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Array { shape: vec![strings.len()], data: Data::Str(strings) })
            }
            other => Err(invalid("schema", format!("arrays of type {other:?} are not read"))),
        }
    }

    fn npy(&self, file: &str) -> Result<Array, Error> {
        let member = self.member(file)?;
        let read = self.read.get().saturating_add(member.size);
        if read > self.limit {
            return Err(invalid("total_size", "the arrays are larger than the bundle limit"));
        }
        self.read.set(read);
        parse_npy(&self.archive.read(member, member.size)?, file)
    }

    fn member(&self, file: &str) -> Result<&Member, Error> {
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            return Err(invalid("path", format!("array file '{file}' is not a member name")));
        }
        self.archive.find(file).ok_or_else(|| invalid("schema", format!("array file '{file}' is not in the archive")))
    }
}

fn dict(node: &Value) -> Result<&Map<String, Value>, Error> {
    if loader(node) != "DictNode" {
        return Err(invalid("schema", format!("expected a dict, found a {}", loader(node))));
    }
    node.get("content").and_then(Value::as_object).ok_or_else(|| invalid("schema", "a dict has no content"))
}

fn list(node: &Value) -> Result<&Vec<Value>, Error> {
    match loader(node) {
        "ListNode" | "TupleNode" => {
            node.get("content").and_then(Value::as_array).ok_or_else(|| invalid("schema", "a list has no content"))
        }
        // An object ndarray (GradientBoosting estimators_): nested lists of objects.
        "NdArrayNode" if node.get("type").and_then(Value::as_str) == Some("json") => {
            node.get("content").and_then(Value::as_array).ok_or_else(|| invalid("schema", "an array has no content"))
        }
        other => Err(invalid("schema", format!("expected a list, found a {other}"))),
    }
}

/// A JsonNode's value: Python `json.dumps` text, which may say NaN or Infinity.
fn json_scalar(node: &Value) -> Result<Scalar, Error> {
    if loader(node) != "JsonNode" {
        return Err(invalid("schema", format!("expected a plain value, found a {}", loader(node))));
    }
    let text =
        node.get("content").and_then(Value::as_str).ok_or_else(|| invalid("schema", "a value has no content"))?;
    Ok(match text {
        "NaN" => Scalar::Float(f64::NAN),
        "Infinity" => Scalar::Float(f64::INFINITY),
        "-Infinity" => Scalar::Float(f64::NEG_INFINITY),
        _ => match serde_json::from_str::<Value>(text)
            .map_err(|e| invalid("schema", format!("a value does not parse: {e}")))?
        {
            Value::Null => Scalar::Null,
            Value::Bool(b) => Scalar::Bool(b),
            Value::String(s) => Scalar::Str(s),
            Value::Number(n) if text.contains(['.', 'e', 'E']) => Scalar::Float(n.as_f64().unwrap_or(f64::NAN)),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Scalar::Int(i),
                None => Scalar::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            _ => return Err(invalid("schema", "a value is a container")),
        },
    })
}

/// The fields of `sklearn.tree._tree.Tree`'s node records (itemsize 64).
const TREE_NODE_DESCR: &str = "[('left_child', '<i8'), ('right_child', '<i8'), ('feature', '<i8'), ('threshold', '<f8'), \
     ('impurity', '<f8'), ('n_node_samples', '<i8'), ('weighted_n_node_samples', '<f8'), \
     ('missing_go_to_left', '|u1'), ('', '|V7')]";

/// Parse a `.npy` file (format 1.0-3.0) into a C-order array.
fn parse_npy(bytes: &[u8], file: &str) -> Result<Array, Error> {
    let bad = |m: &str| invalid("npy", format!("{file}: {m}"));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy array"));
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize, 12),
        v => return Err(bad(&format!("format version {v} is unknown"))),
    };
    let end = start.checked_add(header_len).filter(|e| *e <= bytes.len()).ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| bad("the header is not text"))?;
    let data = &bytes[end..];
    let field = |key: &str| -> Option<&str> {
        let i = header.find(&format!("'{key}':"))? + key.len() + 3;
        Some(header[i..].trim_start())
    };
    let descr_text = field("descr").ok_or_else(|| bad("no descr"))?;
    let descr = if descr_text.starts_with('[') {
        // A structured dtype: the list up to its matching bracket.
        let close = descr_text.find("]").ok_or_else(|| bad("unterminated descr"))?;
        descr_text[..=close].to_string()
    } else {
        descr_text.split('\'').nth(1).ok_or_else(|| bad("malformed descr"))?.to_string()
    };
    let fortran = field("fortran_order").ok_or_else(|| bad("no fortran_order"))?.starts_with("True");
    let shape_text = field("shape").ok_or_else(|| bad("no shape"))?;
    let shape_text =
        shape_text.strip_prefix('(').and_then(|r| r.split(')').next()).ok_or_else(|| bad("malformed shape"))?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>().map_err(|_| bad("malformed shape")))
        .collect::<Result<_, _>>()?;
    if shape.len() > 8 {
        return Err(bad("more than 8 dimensions"));
    }
    let count = shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d)).ok_or_else(|| bad("the shape overflows"))?;
    let item = match descr.as_str() {
        "<f8" | "<i8" => 8,
        "<f4" | "<i4" | "<u4" => 4,
        "|u1" | "|b1" => 1,
        d if d == TREE_NODE_DESCR => 64,
        d if d.starts_with("<U") => 4 * d[2..].parse::<usize>().map_err(|_| bad("malformed string dtype"))?,
        d => return Err(invalid("dtype", format!("{file}: arrays of dtype {d} are not read"))),
    };
    if count.checked_mul(item) != Some(data.len()) {
        return Err(bad(&format!("{} bytes of data for {count} items of {item} bytes", data.len())));
    }
    let chunks = data.chunks_exact(item.max(1));
    let data = match descr.as_str() {
        "<f8" => Data::F64(chunks.map(|c| f64::from_le_bytes(c.try_into().expect("8"))).collect()),
        "<f4" => Data::F64(chunks.map(|c| f32::from_le_bytes(c.try_into().expect("4")) as f64).collect()),
        "<i8" => Data::I64(chunks.map(|c| i64::from_le_bytes(c.try_into().expect("8"))).collect()),
        "<i4" => Data::I64(chunks.map(|c| i32::from_le_bytes(c.try_into().expect("4")) as i64).collect()),
        "<u4" => Data::I64(chunks.map(|c| u32::from_le_bytes(c.try_into().expect("4")) as i64).collect()),
        "|u1" | "|b1" => Data::I64(data.iter().map(|b| *b as i64).collect()),
        d if d == TREE_NODE_DESCR => Data::Nodes(
            chunks
                .map(|c| TreeNode {
                    left: i64::from_le_bytes(c[0..8].try_into().expect("8")),
                    right: i64::from_le_bytes(c[8..16].try_into().expect("8")),
                    feature: i64::from_le_bytes(c[16..24].try_into().expect("8")),
                    threshold: f64::from_le_bytes(c[24..32].try_into().expect("8")),
                    missing_left: c[56] != 0,
                })
                .collect(),
        ),
        _ => Data::Str(
            chunks
                .map(|c| {
                    c.chunks_exact(4)
                        .map(|u| u32::from_le_bytes(u.try_into().expect("4")))
                        .take_while(|u| *u != 0)
                        .map(|u| char::from_u32(u).ok_or_else(|| bad("a string holds an invalid code point")))
                        .collect::<Result<String, _>>()
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    let array = Array { shape, data };
    Ok(if fortran && array.shape.len() >= 2 { to_c_order(array) } else { array })
}

/// Reorder a column-major array's data into row-major.
fn to_c_order(a: Array) -> Array {
    fn reorder<T: Clone>(v: &[T], shape: &[usize]) -> Vec<T> {
        let n = v.len();
        let mut out = Vec::with_capacity(n);
        let mut idx = vec![0usize; shape.len()];
        for _ in 0..n {
            // Fortran offset of the C-order index `idx`.
            let (mut off, mut stride) = (0usize, 1usize);
            for (d, i) in idx.iter().enumerate() {
                off += i * stride;
                stride *= shape[d];
            }
            out.push(v[off].clone());
            for d in (0..shape.len()).rev() {
                idx[d] += 1;
                if idx[d] < shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        out
    }
    let data = match &a.data {
        Data::F64(v) => Data::F64(reorder(v, &a.shape)),
        Data::I64(v) => Data::I64(reorder(v, &a.shape)),
        Data::Str(v) => Data::Str(reorder(v, &a.shape)),
        Data::Nodes(v) => Data::Nodes(reorder(v, &a.shape)),
    };
    Array { shape: a.shape, data }
}

impl Reader {
    fn classes(&self, node: &Value) -> Result<Classes, Error> {
        let a = self.array(self.attr(node, "classes_")?)?;
        let classes = match a.data {
            Data::I64(v) => Classes::Int(v),
            Data::Str(v) => Classes::Str(v),
            Data::F64(v) if v.iter().all(|f| f.fract() == 0.0) => Classes::Int(v.iter().map(|f| *f as i64).collect()),
            _ => return Err(invalid("dtype", "classes_ are neither integers nor strings")),
        };
        if classes.len() < 2 {
            return Err(invalid("schema", "a classifier needs at least two classes"));
        }
        Ok(classes)
    }

    /// A fitted tree of a tree estimator, checked so that evaluating it cannot go
    /// out of bounds or loop.
    fn tree(&self, estimator: &Value, n_features: usize, width: usize) -> Result<Tree, Error> {
        let tree = self.attr(estimator, "tree_")?;
        if loader(tree) != "TreeNode" || class_path(tree) != "sklearn.tree._tree.Tree" {
            return Err(invalid("schema", "tree_ is not a sklearn Tree"));
        }
        let state = dict(tree.get("content").ok_or_else(|| invalid("schema", "a tree has no state"))?)?;
        let get = |k: &str| state.get(k).ok_or_else(|| invalid("schema", format!("a tree has no {k}")));
        let node_count = self.int(get("node_count")?, "node_count")?;
        let nodes = match self.array(get("nodes")?)?.data {
            Data::Nodes(n) => n,
            _ => return Err(invalid("dtype", "tree nodes are not sklearn's node records")),
        };
        let values = self.array(get("values")?)?;
        let bad = |m: String| invalid("tree", m);
        if nodes.is_empty() || nodes.len() as i64 != node_count {
            return Err(bad(format!("{} nodes for a node_count of {node_count}", nodes.len())));
        }
        if values.shape.len() != 3 || values.shape[0] != nodes.len() || values.shape[1] != 1 {
            return Err(bad(format!("values have shape {:?}; one output per node expected", values.shape)));
        }
        if values.shape[2] < width {
            return Err(bad(format!("values have {} columns, {width} needed", values.shape[2])));
        }
        for (i, n) in nodes.iter().enumerate() {
            let leaf = n.left == -1 && n.right == -1;
            let inner = n.left > i as i64
                && n.right > i as i64
                && (n.left as usize) < nodes.len()
                && (n.right as usize) < nodes.len()
                && n.feature >= 0
                && (n.feature as usize) < n_features
                && !n.threshold.is_nan();
            if !leaf && !inner {
                return Err(bad(format!("node {i} points outside the tree or at a feature it does not have")));
            }
        }
        let stride = values.shape[2];
        let all = values.f64s("tree values")?;
        let values = (0..nodes.len()).flat_map(|i| all[i * stride..i * stride + width].to_vec()).collect();
        Ok(Tree { nodes, values, width })
    }

    fn n_features(&self, node: &Value) -> Result<usize, Error> {
        let n = self.int(self.attr(node, "n_features_in_")?, "n_features_in_")?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n > 0 && *n < 1_000_000)
            .ok_or_else(|| invalid("schema", "n_features_in_ is out of range"))
    }

    fn one_output(&self, node: &Value) -> Result<(), Error> {
        if let Some(n) = self.attrs(node)?.get("n_outputs_") {
            let n = self.int(n, "n_outputs_")?;
            if n != 1 {
                return Err(invalid("unsupported", format!("{n} outputs; zoo serves single-output estimators")));
            }
        }
        Ok(())
    }

    fn estimator(&self, node: &Value, n_features: usize) -> Result<Estimator, Error> {
        let class = class_path(node);
        let short = class.rsplit('.').next().unwrap_or("").to_string();
        let float = |k: &str| self.float(self.attr(node, k)?, k);
        match short.as_str() {
            "LinearRegression" | "Ridge" => {
                let coef = self.array(self.attr(node, "coef_")?)?;
                if coef.shape.len() != 1 || coef.shape[0] != n_features {
                    return Err(invalid(
                        "unsupported",
                        format!("coef_ has shape {:?}; one target expected", coef.shape),
                    ));
                }
                let intercept = self.float(self.attr(node, "intercept_")?, "intercept_")?;
                Ok(Estimator::Linear { coef: coef.f64s("coef_")?, intercept })
            }
            "LogisticRegression" => {
                let classes = self.classes(node)?;
                if let Some(mc) = self.attrs(node)?.get("multi_class")
                    && let Scalar::Str(m) = json_scalar(mc)?
                    && m == "ovr"
                {
                    return Err(invalid("unsupported", "one-vs-rest logistic regression (multi_class='ovr')"));
                }
                let coef = self.array(self.attr(node, "coef_")?)?;
                let rows = if classes.len() == 2 { 1 } else { classes.len() };
                if coef.shape != [rows, n_features] {
                    return Err(invalid(
                        "schema",
                        format!("coef_ has shape {:?}, expected [{rows}, {n_features}]", coef.shape),
                    ));
                }
                let intercept = self.array(self.attr(node, "intercept_")?)?.f64s("intercept_")?;
                if intercept.len() != rows {
                    return Err(invalid("schema", "intercept_ does not match coef_"));
                }
                let flat = coef.f64s("coef_")?;
                let coef = flat.chunks(n_features).map(<[f64]>::to_vec).collect();
                Ok(Estimator::Logistic { classes, coef, intercept })
            }
            "DecisionTreeClassifier" => {
                self.one_output(node)?;
                let classes = self.classes(node)?;
                let tree = self.tree(node, n_features, classes.len())?;
                Ok(Estimator::DecisionTreeClassifier { classes, tree })
            }
            "DecisionTreeRegressor" => {
                self.one_output(node)?;
                Ok(Estimator::DecisionTreeRegressor { tree: self.tree(node, n_features, 1)? })
            }
            "RandomForestClassifier" | "RandomForestRegressor" => {
                self.one_output(node)?;
                let members = list(self.attr(node, "estimators_")?)?;
                if members.is_empty() || members.len() > MAX_TREES {
                    return Err(invalid("schema", format!("{} trees in the forest", members.len())));
                }
                if short == "RandomForestClassifier" {
                    let classes = self.classes(node)?;
                    let trees =
                        members.iter().map(|t| self.tree(t, n_features, classes.len())).collect::<Result<_, _>>()?;
                    Ok(Estimator::RandomForestClassifier { classes, trees })
                } else {
                    let trees = members.iter().map(|t| self.tree(t, n_features, 1)).collect::<Result<_, _>>()?;
                    Ok(Estimator::RandomForestRegressor { trees })
                }
            }
            "GradientBoostingClassifier" | "GradientBoostingRegressor" => {
                self.gradient_boosting(node, &short, n_features, float("learning_rate")?)
            }
            _ => Err(invalid("unsupported", format!("{class} is not an estimator zoo runs"))),
        }
    }

    fn gradient_boosting(
        &self,
        node: &Value,
        short: &str,
        n_features: usize,
        learning_rate: f64,
    ) -> Result<Estimator, Error> {
        let loss = match json_scalar(self.attr(node, "loss")?)? {
            Scalar::Str(s) => s,
            _ => return Err(invalid("schema", "loss is not a string")),
        };
        let stages: Vec<Vec<Tree>> = list(self.attr(node, "estimators_")?)?
            .iter()
            .map(|stage| list(stage)?.iter().map(|t| self.tree(t, n_features, 1)).collect::<Result<Vec<_>, _>>())
            .collect::<Result<_, _>>()?;
        if stages.is_empty() || stages.len() > MAX_TREES {
            return Err(invalid("schema", format!("{} boosting stages", stages.len())));
        }
        let init = self.attr(node, "init_")?;
        let zero = loader(init) == "JsonNode" && json_scalar(init)? == Scalar::Str("zero".into());
        if short == "GradientBoostingRegressor" {
            if stages.iter().any(|s| s.len() != 1) {
                return Err(invalid("schema", "a regressor has one tree per stage"));
            }
            let init = if zero {
                0.0
            } else if class_path(init) == "sklearn.dummy.DummyRegressor" {
                let c = self.array(self.attr(init, "constant_")?)?.f64s("constant_")?;
                *c.first().ok_or_else(|| invalid("schema", "DummyRegressor has no constant"))?
            } else {
                return Err(invalid("unsupported", format!("init estimator {}", class_path(init))));
            };
            let stages = stages.into_iter().map(|mut s| s.remove(0)).collect();
            return Ok(Estimator::GradientBoostingRegressor { init, learning_rate, stages });
        }
        if loss != "log_loss" {
            return Err(invalid("unsupported", format!("gradient boosting with loss '{loss}'; zoo runs log_loss")));
        }
        let classes = self.classes(node)?;
        let k = if classes.len() == 2 { 1 } else { classes.len() };
        if stages.iter().any(|s| s.len() != k) {
            return Err(invalid("schema", format!("each stage must have {k} trees")));
        }
        let init = if zero {
            vec![0.0; k]
        } else if class_path(init) == "sklearn.dummy.DummyClassifier" {
            let prior = self.array(self.attr(init, "class_prior_")?)?.f64s("class_prior_")?;
            if prior.len() != classes.len() {
                return Err(invalid("schema", "class_prior_ does not match the classes"));
            }
            let eps = f64::EPSILON;
            let p: Vec<f64> = prior.iter().map(|p| p.clamp(eps, 1.0 - eps)).collect();
            if k == 1 {
                vec![(p[1] / (1.0 - p[1])).ln()]
            } else {
                let mean_log = p.iter().map(|v| v.ln()).sum::<f64>() / p.len() as f64;
                p.iter().map(|v| v.ln() - mean_log).collect()
            }
        } else {
            return Err(invalid("unsupported", format!("init estimator {}", class_path(init))));
        };
        Ok(Estimator::GradientBoostingClassifier { classes, init, learning_rate, stages })
    }

    fn scaler(&self, node: &Value, n_features: usize) -> Result<Transform, Error> {
        let flag = |k: &str| -> Result<bool, Error> {
            match self.attrs(node)?.get(k).map(json_scalar).transpose()? {
                Some(Scalar::Bool(b)) => Ok(b),
                None => Ok(true),
                _ => Err(invalid("schema", format!("{k} is not a bool"))),
            }
        };
        let vector = |k: &str| -> Result<Vec<f64>, Error> {
            let v = self.array(self.attr(node, k)?)?.f64s(k)?;
            if v.len() != n_features {
                return Err(invalid("schema", format!("{k} has {} values for {n_features} features", v.len())));
            }
            Ok(v)
        };
        let mean = if flag("with_mean")? { Some(vector("mean_")?) } else { None };
        let scale = if flag("with_std")? { Some(vector("scale_")?) } else { None };
        Ok(Transform::Scale { mean, scale })
    }

    fn feature_names(&self, node: &Value) -> Result<Vec<String>, Error> {
        match self.attrs(node)?.get("feature_names_in_") {
            Some(n) => match self.array(n)?.data {
                Data::Str(v) => Ok(v),
                _ => Err(invalid("dtype", "feature_names_in_ are not strings")),
            },
            None => Ok(vec![]),
        }
    }
}

/// The estimator and its steps, named and checked against the supported set
/// (before any array is read).
fn layout(root: &Value) -> Result<(String, Vec<&Value>), Result<String, Error>> {
    let class = class_path(root);
    let steps: Vec<&Value> = if class == "sklearn.pipeline.Pipeline" {
        let attrs = root
            .get("content")
            .map(dict)
            .transpose()
            .map_err(Err)?
            .ok_or_else(|| Err(invalid("schema", "a pipeline has no state")))?;
        let steps =
            list(attrs.get("steps").ok_or_else(|| Err(invalid("schema", "a pipeline has no steps")))?).map_err(Err)?;
        let mut v = Vec::new();
        for s in steps {
            let pair = list(s).map_err(Err)?;
            match pair.as_slice() {
                [_, est] if loader(est) == "ObjectNode" => v.push(est),
                // "passthrough" or None: an identity step.
                [_, est] if loader(est) == "JsonNode" => {}
                _ => return Err(Err(invalid("schema", "a pipeline step is not (name, estimator)"))),
            }
        }
        v
    } else {
        vec![root]
    };
    let names: Vec<String> = steps.iter().map(|s| class_path(s).rsplit('.').next().unwrap_or("").to_string()).collect();
    let estimator =
        if class == "sklearn.pipeline.Pipeline" { format!("Pipeline({})", names.join(", ")) } else { names.join("") };
    let Some((last, transforms)) = steps.split_last() else {
        return Err(Ok("an empty pipeline".into()));
    };
    for t in transforms {
        if class_path(t) != "sklearn.preprocessing._data.StandardScaler" {
            return Err(Ok(format!(
                "pipeline step {} (zoo runs StandardScaler steps before the estimator)",
                class_path(t)
            )));
        }
    }
    let final_class = class_path(last);
    if !SUPPORTED.contains(&final_class.as_str())
        || final_class.ends_with("Pipeline")
        || final_class.ends_with("StandardScaler")
    {
        return Err(Ok(final_class));
    }
    Ok((estimator, steps))
}

/// Read and check a skops archive into a model zoo can evaluate. An estimator zoo
/// does not run is `Ok(Err(reason))`; a malformed file is an error.
pub fn load(path: &Path, limits: &Limits) -> Result<Result<(Model, SkopsInfo), SkopsInfo>, Error> {
    let archive = Archive::open(path, Format::Mlflow, limits)?;
    let schema_member = archive
        .find("schema.json")
        .cloned()
        .ok_or_else(|| invalid("schema", "schema.json is missing: not a skops file"))?;
    let schema_bytes = archive.read(&schema_member, MAX_SCHEMA)?;
    let root: Value = serde_json::from_slice(&schema_bytes)
        .map_err(|e| invalid("schema", format!("schema.json is not JSON: {e}")))?;
    match root.get("protocol").and_then(Value::as_i64) {
        Some(0..=2) => {}
        other => return Err(invalid("protocol", format!("skops protocol {other:?}; zoo reads protocols 0 to 2"))),
    }
    let sklearn_version = root
        .get("content")
        .and_then(|c| c.get("content"))
        .and_then(|c| c.get("_sklearn_version"))
        .and_then(|v| json_scalar(v).ok())
        .and_then(|s| if let Scalar::Str(s) = s { Some(s) } else { None });
    let mut info = SkopsInfo {
        estimator: class_path(&root).rsplit('.').next().unwrap_or("").to_string(),
        kind: String::new(),
        n_features: None,
        feature_names: vec![],
        classes: None,
        sklearn_version: sklearn_version.clone(),
        unservable_reason: None,
    };
    let (estimator_name, steps) = match layout(&root) {
        Ok(l) => l,
        Err(Ok(what)) => {
            info.unservable_reason = Some(format!(
                "zoo runs these scikit-learn estimators natively: LogisticRegression, LinearRegression, Ridge, \
                 DecisionTree/RandomForest/GradientBoosting classifiers and regressors, with StandardScaler steps in a \
                 Pipeline; this model is {what}. Log it with mlflow.onnx (via skl2onnx) to serve it"
            ));
            return Ok(Err(info));
        }
        Err(Err(e)) => return Err(e),
    };
    info.estimator = estimator_name;
    // Trees before scikit-learn 1.4 stored class counts and (before 1.3) had no
    // missing-value field; refuse them rather than answer differently.
    if let Some(v) = &sklearn_version {
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if (major, minor) < (1, 4) {
            info.unservable_reason =
                Some(format!("saved with scikit-learn {v}; zoo runs models saved with scikit-learn 1.4 or later"));
            return Ok(Err(info));
        }
    }
    let reader = Reader { archive, read: std::cell::Cell::new(schema_member.size), limit: limits.max_bundle_size };
    let first = steps[0];
    let n_features = reader.n_features(first)?;
    let feature_names = reader.feature_names(first)?;
    let (last, transforms) = steps.split_last().expect("layout checked");
    let transforms = transforms.iter().map(|t| reader.scaler(t, n_features)).collect::<Result<Vec<_>, _>>()?;
    let estimator = reader.estimator(last, n_features)?;
    info.n_features = Some(n_features as u64);
    info.kind = if estimator.classes().is_some() { "classifier" } else { "regressor" }.into();
    info.classes = estimator.classes().map(Classes::json);
    info.feature_names = feature_names.clone();
    Ok(Ok((Model { transforms, estimator, n_features, feature_names }, info)))
}

/// Validate a skops archive and describe the estimator in it.
pub fn inspect(path: &Path, limits: &Limits) -> Result<SkopsInfo, Error> {
    Ok(match load(path, limits)? {
        Ok((_, info)) => info,
        Err(info) => info,
    })
}

/// The signature of a skops model in an MLflow bundle: one `X` matrix (the columns
/// of the MLflow signature, in order) in, what MLflow's pyfunc returns out: the
/// predicted labels or values, or with `predict_fn: predict_proba` the class
/// probabilities.
pub fn signature(model: &SkopsInfo, mlflow: &MlflowInfo) -> Signature {
    let columns: Vec<(String, String)> = mlflow
        .signature_inputs
        .as_ref()
        .and_then(Value::as_array)
        .map(|cols| {
            cols.iter()
                .filter_map(|c| Some((c.get("name")?.as_str()?.to_string(), c.get("type")?.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let tensor_dtype =
        mlflow.signature_inputs.as_ref().and_then(|s| s.pointer("/0/tensor-spec/dtype")).and_then(Value::as_str);
    let f32 = (!columns.is_empty() && columns.iter().all(|(_, t)| t == "float")) || tensor_dtype == Some("float32");
    let dtype = if f32 { DType::Float32 } else { DType::Float64 };
    let n = model.n_features.map(|n| Dim::Fixed(n as i64)).unwrap_or(Dim::Unknown(None));
    let names =
        if columns.is_empty() { model.feature_names.clone() } else { columns.iter().map(|c| c.0.clone()).collect() };
    let input = TensorSpec {
        name: "X".into(),
        kind: ValueKind::Tensor,
        dtype,
        type_text: format!("tensor({})[batch,{n}]", if f32 { "float" } else { "double" }),
        shape: Some(vec![Dim::Symbolic("batch".into()), n]),
        doc: if names.is_empty() { String::new() } else { format!("columns: {}", names.join(", ")) },
        optional: false,
    };
    let classes = model.classes.as_ref();
    let output = match (mlflow.predict_fn.as_deref(), classes) {
        (Some("predict_proba"), Some(c)) => TensorSpec {
            name: "probabilities".into(),
            kind: ValueKind::Tensor,
            dtype: DType::Float64,
            type_text: format!("tensor(double)[batch,{}]", c.len()),
            shape: Some(vec![Dim::Symbolic("batch".into()), Dim::Fixed(c.len() as i64)]),
            doc: "class probabilities, in the order of the labels".into(),
            optional: false,
        },
        (_, Some(c)) => {
            let strings = c.iter().any(Value::is_string);
            TensorSpec {
                name: "predictions".into(),
                kind: ValueKind::Tensor,
                dtype: if strings { DType::String } else { DType::Int64 },
                type_text: format!("tensor({})[batch]", if strings { "string" } else { "int64" }),
                shape: Some(vec![Dim::Symbolic("batch".into())]),
                doc: "the predicted class label".into(),
                optional: false,
            }
        }
        (_, None) => TensorSpec {
            name: "predictions".into(),
            kind: ValueKind::Tensor,
            dtype: DType::Float64,
            type_text: "tensor(double)[batch]".into(),
            shape: Some(vec![Dim::Symbolic("batch".into())]),
            doc: "the predicted value".into(),
            optional: false,
        },
    };
    Signature { inputs: vec![input], outputs: vec![output], ..Signature::empty(Format::Mlflow, true) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut h = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
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

    #[test]
    fn npy_arrays_in_both_orders_and_strings() {
        let vals: Vec<u8> = [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0].iter().flat_map(|f| f.to_le_bytes()).collect();
        let c = parse_npy(&npy("<f8", false, "(2, 3)", &vals), "a").unwrap();
        assert_eq!(c.data, Data::F64(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        // Column-major on disk: element (r, c) at c * rows + r.
        let f = parse_npy(&npy("<f8", true, "(2, 3)", &vals), "a").unwrap();
        assert_eq!(f.data, Data::F64(vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0]));
        let s: Vec<u8> = "ab\0\0c\0\0\0".chars().flat_map(|ch| (ch as u32).to_le_bytes()).collect();
        let strings = parse_npy(&npy("<U4", false, "(2,)", &s), "s").unwrap();
        assert_eq!(strings.data, Data::Str(vec!["ab".into(), "c".into()]));
        let scalar = parse_npy(&npy("<i8", false, "()", &7i64.to_le_bytes()), "n").unwrap();
        assert_eq!((scalar.shape.len(), scalar.data), (0, Data::I64(vec![7])));
    }

    #[test]
    fn hostile_npy_is_refused() {
        let rule = |b: &[u8]| match parse_npy(b, "x") {
            Err(Error::Invalid { rule, .. }) => rule,
            other => panic!("{other:?}"),
        };
        assert_eq!(rule(b"not an array"), "npy");
        // A shape that claims far more data than the file has.
        assert_eq!(rule(&npy("<f8", false, "(1000000000, 1000000000)", &[0u8; 8])), "npy");
        assert_eq!(rule(&npy("<f8", false, "(18446744073709551615, 2)", &[])), "npy");
        assert_eq!(rule(&npy("|O", false, "(1,)", &[0u8; 8])), "dtype");
        let mut truncated = npy("<f8", false, "(1,)", &[0u8; 8]);
        truncated.truncate(20);
        assert_eq!(rule(&truncated), "npy");
    }

    #[test]
    fn json_values_as_python_wrote_them() {
        let node = |c: &str| serde_json::json!({"__loader__": "JsonNode", "__class__": "str", "content": c});
        assert_eq!(json_scalar(&node("3")).unwrap(), Scalar::Int(3));
        assert_eq!(json_scalar(&node("1.0")).unwrap(), Scalar::Float(1.0));
        assert_eq!(json_scalar(&node("\"lbfgs\"")).unwrap(), Scalar::Str("lbfgs".into()));
        assert_eq!(json_scalar(&node("Infinity")).unwrap(), Scalar::Float(f64::INFINITY));
        assert_eq!(json_scalar(&node("null")).unwrap(), Scalar::Null);
    }

    #[test]
    fn trees_route_as_sklearn_does() {
        // Root: x0 <= 0.800000011920929 (a float64 midpoint that float32 cannot hold).
        let leaf = TreeNode { left: -1, right: -1, feature: -2, threshold: -2.0, missing_left: false };
        let tree = Tree {
            nodes: vec![
                TreeNode { left: 1, right: 2, feature: 0, threshold: 0.800000011920929, missing_left: true },
                leaf,
                leaf,
            ],
            values: vec![0.0, 1.0, 2.0],
            width: 1,
        };
        assert_eq!(tree.leaf(&[0.5]), 1);
        assert_eq!(tree.leaf(&[0.9]), 2);
        // The next double above the threshold rounds to the same float32: left.
        assert_eq!(tree.leaf(&[0.8000000119209291]), 1);
        assert_eq!(tree.leaf(&[f64::NAN]), 1, "NaN follows missing_go_to_left");
        assert_eq!(tree.leaf(&[f64::INFINITY]), 2);
    }
}
