//! Tensors from and to JSON without a `serde_json::Value` tree in between.
//!
//! A request's nested arrays are parsed straight into a typed, row-major buffer
//! and its shape (rectangular, at most `max_rank` deep, at most `budget` elements
//! in all), so `[[0],[0],...]` costs eight bytes an element, not a tree node and
//! a heap allocation each. Outputs are written to JSON text directly.

use std::fmt;

use ndarray::{ArrayD, IxDyn};
use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use zoo_api::DType;

use crate::runtime::Tensor;

/// A leaf of a nested array, as JSON wrote it.
#[derive(Debug, Clone, Copy)]
pub enum Leaf<'a> {
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
    Str(&'a str),
    Null,
}

impl fmt::Display for Leaf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Leaf::Int(i) => write!(f, "{i}"),
            Leaf::Uint(u) => write!(f, "{u}"),
            Leaf::Float(x) => write!(f, "{x}"),
            Leaf::Bool(b) => write!(f, "{b}"),
            Leaf::Str(s) => write!(f, "{:?}", s.chars().take(40).collect::<String>()),
            Leaf::Null => write!(f, "null"),
        }
    }
}

/// An element type a tensor can be parsed into.
pub trait Elem: Sized {
    /// The value of a leaf, if it is one of this type (`null_is_nan`: `null` is a
    /// missing float value, as MLflow reads DataFrames).
    fn from_leaf(leaf: Leaf<'_>, null_is_nan: bool) -> Option<Self>;
}

fn int(leaf: Leaf<'_>) -> Option<i128> {
    match leaf {
        Leaf::Int(i) => Some(i.into()),
        Leaf::Uint(u) => Some(u.into()),
        _ => None,
    }
}

macro_rules! int_elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            fn from_leaf(leaf: Leaf<'_>, _: bool) -> Option<Self> {
                int(leaf).and_then(|i| <$t>::try_from(i).ok())
            }
        }
    )*};
}
int_elem!(i64, i32, i16, i8, u64, u32, u16, u8);

impl Elem for f64 {
    fn from_leaf(leaf: Leaf<'_>, null_is_nan: bool) -> Option<Self> {
        match leaf {
            Leaf::Float(x) => Some(x),
            Leaf::Int(i) => Some(i as f64),
            Leaf::Uint(u) => Some(u as f64),
            Leaf::Null if null_is_nan => Some(f64::NAN),
            _ => None,
        }
    }
}

impl Elem for f32 {
    fn from_leaf(leaf: Leaf<'_>, null_is_nan: bool) -> Option<Self> {
        match leaf {
            Leaf::Null if null_is_nan => Some(f32::NAN),
            // A number beyond f32's range is refused rather than made infinite.
            other => f64::from_leaf(other, false).map(|x| x as f32).filter(|x| x.is_finite()),
        }
    }
}

impl Elem for half::f16 {
    fn from_leaf(leaf: Leaf<'_>, null_is_nan: bool) -> Option<Self> {
        match leaf {
            Leaf::Null if null_is_nan => Some(half::f16::NAN),
            other => f64::from_leaf(other, false).map(half::f16::from_f64).filter(|x| x.is_finite()),
        }
    }
}

impl Elem for half::bf16 {
    fn from_leaf(leaf: Leaf<'_>, null_is_nan: bool) -> Option<Self> {
        match leaf {
            Leaf::Null if null_is_nan => Some(half::bf16::NAN),
            other => f64::from_leaf(other, false).map(half::bf16::from_f64).filter(|x| x.is_finite()),
        }
    }
}

impl Elem for bool {
    fn from_leaf(leaf: Leaf<'_>, _: bool) -> Option<Self> {
        match leaf {
            Leaf::Bool(b) => Some(b),
            Leaf::Int(0) | Leaf::Uint(0) => Some(false),
            Leaf::Int(1) | Leaf::Uint(1) => Some(true),
            _ => None,
        }
    }
}

impl Elem for String {
    fn from_leaf(leaf: Leaf<'_>, _: bool) -> Option<Self> {
        match leaf {
            Leaf::Str(s) => Some(s.to_string()),
            _ => None,
        }
    }
}

/// Limits of one parse.
#[derive(Debug, Clone, Copy)]
pub struct NestedLimits {
    /// Deepest nesting.
    pub max_rank: usize,
    /// `null` is NaN in float tensors.
    pub null_is_nan: bool,
    /// Elements expected (a declared shape's), reserved at once; 0: unknown.
    pub expected: usize,
}

/// Why a nested array was refused (the message names no input; callers do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NestedError {
    TooDeep(usize),
    NotRectangular(String),
    TooMany,
    /// A leaf of the wrong type: what it was.
    Value(String),
    Json(String),
}

struct State<T> {
    /// Length of the arrays at each depth, from the first one seen.
    shape: Vec<Option<usize>>,
    /// Depth of the leaves, once one is seen.
    rank: Option<usize>,
    data: Vec<T>,
    budget: usize,
    limits: NestedLimits,
    error: Option<NestedError>,
}

struct Level<'s, T> {
    st: &'s mut State<T>,
    depth: usize,
}

impl<T> Level<'_, T> {
    fn fail<E: serde::de::Error>(&mut self, e: NestedError) -> E {
        self.st.error = Some(e);
        E::custom("refused")
    }

    fn leaf<E: serde::de::Error>(mut self, leaf: Leaf<'_>) -> Result<(), E>
    where
        T: Elem,
    {
        let depth = self.depth;
        match self.st.rank {
            None if self.st.shape.len() > depth => {
                return Err(self.fail(NestedError::NotRectangular("it nests deeper in places".into())));
            }
            None => self.st.rank = Some(depth),
            Some(r) if r != depth => {
                return Err(self.fail(NestedError::NotRectangular("it nests deeper in places".into())));
            }
            Some(_) => {}
        }
        if self.st.data.len() >= self.st.budget {
            return Err(self.fail(NestedError::TooMany));
        }
        match T::from_leaf(leaf, self.st.limits.null_is_nan) {
            Some(v) => {
                self.st.data.push(v);
                Ok(())
            }
            None => Err(self.fail(NestedError::Value(leaf.to_string()))),
        }
    }
}

impl<'de, T: Elem> DeserializeSeed<'de> for Level<'_, T> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Elem> Visitor<'de> for Level<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a nested array")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.depth;
        if depth >= self.st.limits.max_rank {
            return Err(self.fail(NestedError::TooDeep(self.st.limits.max_rank)));
        }
        if self.st.rank.is_some_and(|r| depth >= r) {
            return Err(self.fail(NestedError::NotRectangular("it nests deeper in places".into())));
        }
        let mut n = 0usize;
        while seq.next_element_seed(Level { st: &mut *self.st, depth: depth + 1 })?.is_some() {
            n += 1;
        }
        if self.st.shape.len() <= depth {
            self.st.shape.resize(depth + 1, None);
        }
        match self.st.shape[depth] {
            None => self.st.shape[depth] = Some(n),
            Some(m) if m != n => {
                return Err(self
                    .fail(NestedError::NotRectangular(format!("expected an array of {m} at depth {depth}, got {n}"))));
            }
            Some(_) => {}
        }
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.leaf(Leaf::Int(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.leaf(Leaf::Uint(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.leaf(Leaf::Float(v))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.leaf(Leaf::Bool(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.leaf(Leaf::Str(v))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.leaf(Leaf::Null)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, _: A) -> Result<(), A::Error> {
        Err(self.fail(NestedError::Value("an object".into())))
    }
}

/// A nested JSON array (or a single value: rank 0) of `T`, at most `budget`
/// elements: its shape and row-major data.
pub fn nested<T: Elem>(raw: &str, limits: NestedLimits, budget: usize) -> Result<(Vec<usize>, Vec<T>), NestedError> {
    let data = Vec::with_capacity(limits.expected.min(budget));
    let mut st = State { shape: Vec::new(), rank: None, data, budget, limits, error: None };
    let mut de = serde_json::Deserializer::from_str(raw);
    let parsed = Level { st: &mut st, depth: 0 }.deserialize(&mut de).and_then(|()| de.end());
    if let Err(e) = parsed {
        return Err(st.error.take().unwrap_or_else(|| NestedError::Json(e.to_string())));
    }
    // Empty arrays leave the leaves' depth unknown: it is the depth of the arrays.
    let rank = st.rank.unwrap_or(st.shape.len());
    let shape: Vec<usize> = st.shape.iter().take(rank).map(|d| d.unwrap_or(0)).collect();
    let count: usize = shape.iter().product();
    if count != st.data.len() {
        return Err(NestedError::NotRectangular("its arrays do not all have the same length".into()));
    }
    Ok((shape, st.data))
}

/// A tensor of element type `dtype` from nested JSON arrays.
pub fn tensor(raw: &str, dtype: DType, limits: NestedLimits, budget: usize) -> Result<Tensor, NestedError> {
    fn build<T: Elem>(
        raw: &str,
        limits: NestedLimits,
        budget: usize,
        wrap: fn(ArrayD<T>) -> Tensor,
    ) -> Result<Tensor, NestedError> {
        let (shape, data) = nested::<T>(raw, limits, budget)?;
        let a = ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| NestedError::NotRectangular(e.to_string()))?;
        Ok(wrap(a))
    }
    match dtype {
        DType::Float32 => build::<f32>(raw, limits, budget, Tensor::F32),
        DType::Float64 => build::<f64>(raw, limits, budget, Tensor::F64),
        DType::Int64 => build::<i64>(raw, limits, budget, Tensor::I64),
        DType::Int32 => build::<i32>(raw, limits, budget, Tensor::I32),
        DType::Int16 => build::<i16>(raw, limits, budget, Tensor::I16),
        DType::Int8 => build::<i8>(raw, limits, budget, Tensor::I8),
        DType::Uint8 => build::<u8>(raw, limits, budget, Tensor::U8),
        DType::Uint16 => build::<u16>(raw, limits, budget, Tensor::U16),
        DType::Uint32 => build::<u32>(raw, limits, budget, Tensor::U32),
        DType::Uint64 => build::<u64>(raw, limits, budget, Tensor::U64),
        DType::Float16 => build::<half::f16>(raw, limits, budget, Tensor::F16),
        DType::Bfloat16 => build::<half::bf16>(raw, limits, budget, Tensor::BF16),
        DType::Bool => build::<bool>(raw, limits, budget, Tensor::Bool),
        DType::String => build::<String>(raw, limits, budget, Tensor::Str),
        other => Err(NestedError::Value(format!("element type {}", other.as_str()))),
    }
}

/// How many JSON values (containers and scalars) a document holds, counted
/// without building anything; `None` once there are more than `max`.
pub fn count_values(raw: &str, max: usize) -> Result<Option<usize>, String> {
    struct Count<'a> {
        n: &'a mut usize,
        max: usize,
    }
    impl<'de> DeserializeSeed<'de> for Count<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl Count<'_> {
        fn one<E: serde::de::Error>(&mut self) -> Result<(), E> {
            *self.n += 1;
            if *self.n > self.max { Err(E::custom("too many values")) } else { Ok(()) }
        }
    }
    impl<'de> Visitor<'de> for Count<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("JSON")
        }
        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
            self.one()?;
            while seq.next_element_seed(Count { n: &mut *self.n, max: self.max })?.is_some() {}
            Ok(())
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
            self.one()?;
            while map.next_key::<serde::de::IgnoredAny>()?.is_some() {
                map.next_value_seed(Count { n: &mut *self.n, max: self.max })?;
            }
            Ok(())
        }
        fn visit_i64<E: serde::de::Error>(mut self, _: i64) -> Result<(), E> {
            self.one()
        }
        fn visit_u64<E: serde::de::Error>(mut self, _: u64) -> Result<(), E> {
            self.one()
        }
        fn visit_f64<E: serde::de::Error>(mut self, _: f64) -> Result<(), E> {
            self.one()
        }
        fn visit_bool<E: serde::de::Error>(mut self, _: bool) -> Result<(), E> {
            self.one()
        }
        fn visit_str<E: serde::de::Error>(mut self, _: &str) -> Result<(), E> {
            self.one()
        }
        fn visit_unit<E: serde::de::Error>(mut self) -> Result<(), E> {
            self.one()
        }
    }
    let mut n = 0usize;
    let mut de = serde_json::Deserializer::from_str(raw);
    let counted = (Count { n: &mut n, max }).deserialize(&mut de).and_then(|()| de.end());
    match counted {
        Ok(()) => Ok(Some(n)),
        Err(_) if n > max => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// A tensor written as nested JSON arrays (non-finite floats as `null`).
pub struct Nested<'a>(pub &'a Tensor);

/// A tensor written as one flat JSON array, row major.
pub struct Flat<'a>(pub &'a Tensor);

/// Rows `start..end` of a tensor's first axis, as nested arrays each.
pub struct Rows<'a> {
    pub tensor: &'a Tensor,
    pub row: usize,
}

struct Slice<'a, T> {
    data: &'a [T],
    shape: &'a [usize],
}

impl<T: Serialize> Serialize for Slice<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.shape {
            [] => self.data.first().serialize(s),
            [_] => s.collect_seq(self.data),
            [n, rest @ ..] => {
                let stride: usize = rest.iter().product();
                let mut seq = s.serialize_seq(Some(*n))?;
                for i in 0..*n {
                    let end = ((i + 1) * stride).min(self.data.len());
                    seq.serialize_element(&Slice { data: &self.data[(i * stride).min(end)..end], shape: rest })?;
                }
                seq.end()
            }
        }
    }
}

/// Run `f` on a tensor's data in standard (row-major) layout and its shape.
macro_rules! with_data {
    ($t:expr, |$data:ident, $shape:ident| $body:expr) => {
        match $t {
            Tensor::F32(a) => {
                let c = a.as_standard_layout();
                let $data = c.as_slice().unwrap_or(&[]);
                let $shape = a.shape();
                $body
            }
            Tensor::F64(a) => {
                let c = a.as_standard_layout();
                let $data = c.as_slice().unwrap_or(&[]);
                let $shape = a.shape();
                $body
            }
            Tensor::I64(a) => {
                let c = a.as_standard_layout();
                let $data = c.as_slice().unwrap_or(&[]);
                let $shape = a.shape();
                $body
            }
            Tensor::I32(a) => {
                let c = a.as_standard_layout();
                let $data = c.as_slice().unwrap_or(&[]);
                let $shape = a.shape();
                $body
            }
            Tensor::I16(a) => {
                let c = a.as_standard_layout();
                let $data = c.as_slice().unwrap_or(&[]);
                let $shape = a.shape();
                $body
            }
            Tensor::I8(a) => {
                let c = a.as_standard_layout();
                let $data = c.as_slice().unwrap_or(&[]);
                let $shape = a.shape();
                $body
            }
            Tensor::U8(a) => {
                let c = a.as_standard_layout();
                let $data = c.as_slice().unwrap_or(&[]);
                let $shape = a.shape();
                $body
            }
            Tensor::U16(a) => {
                let c = a.as_standard_layout();
                let $data = c.as_slice().unwrap_or(&[]);
                let $shape = a.shape();
                $body
            }
            Tensor::U32(a) => {
                let c = a.as_standard_layout();
                let $data = c.as_slice().unwrap_or(&[]);
                let $shape = a.shape();
                $body
            }
            Tensor::U64(a) => {
                let c = a.as_standard_layout();
                let $data = c.as_slice().unwrap_or(&[]);
                let $shape = a.shape();
                $body
            }
            // Half-precision values are written as the f32 they widen to.
            Tensor::F16(a) => {
                let wide = a.mapv(half::f16::to_f32);
                let c = wide.as_standard_layout();
                let $data = c.as_slice().unwrap_or(&[]);
                let $shape = a.shape();
                $body
            }
            Tensor::BF16(a) => {
                let wide = a.mapv(half::bf16::to_f32);
                let c = wide.as_standard_layout();
                let $data = c.as_slice().unwrap_or(&[]);
                let $shape = a.shape();
                $body
            }
            Tensor::Bool(a) => {
                let c = a.as_standard_layout();
                let $data = c.as_slice().unwrap_or(&[]);
                let $shape = a.shape();
                $body
            }
            Tensor::Str(a) => {
                let c = a.as_standard_layout();
                let $data = c.as_slice().unwrap_or(&[]);
                let $shape = a.shape();
                $body
            }
        }
    };
}

impl Serialize for Nested<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        with_data!(self.0, |data, shape| Slice { data, shape }.serialize(s))
    }
}

impl Serialize for Flat<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        with_data!(self.0, |data, _shape| s.collect_seq(data))
    }
}

impl Serialize for Rows<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        with_data!(self.tensor, |data, shape| {
            let rest = &shape[1.min(shape.len())..];
            let stride: usize = rest.iter().product();
            let start = (self.row * stride).min(data.len());
            let end = (start + stride).min(data.len());
            Slice { data: &data[start..end], shape: rest }.serialize(s)
        })
    }
}

/// One record per row of several same-length outputs: `[{name: row}, ...]`.
pub struct Records<'a> {
    pub outputs: &'a [(String, Tensor)],
    pub rows: usize,
}

impl Serialize for Records<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Record<'b>(&'b [(String, Tensor)], usize);
        impl Serialize for Record<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(self.0.len()))?;
                for (name, t) in self.0 {
                    map.serialize_entry(name, &Rows { tensor: t, row: self.1 })?;
                }
                map.end()
            }
        }
        let mut seq = s.serialize_seq(Some(self.rows))?;
        for i in 0..self.rows {
            seq.serialize_element(&Record(self.outputs, i))?;
        }
        seq.end()
    }
}

/// JSON text of a serializable value, kept as text.
pub fn raw<T: Serialize>(v: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(v).unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"))
}

/// Parse a JSON body; a value that is valid JSON but not what the route takes is
/// reported with the field and the rule it breaks, not as a syntax error.
pub fn parse<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> crate::error::Result<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        json_error(&field, e.into_inner())
    })?;
    de.end().map_err(|e| json_error(".", e))?;
    Ok(value)
}

fn json_error(field: &str, e: serde_json::Error) -> crate::error::Error {
    let rule = e.to_string();
    // serde_json's position suffix says nothing a client needs.
    let rule = rule.split(" at line ").next().unwrap_or(&rule).to_string();
    if let Some((_, name_rule)) = rule.split_once(zoo_api::typed::INVALID_NAME) {
        return crate::error::Error::InvalidName(format!("field '{field}': {name_rule}"));
    }
    match e.classify() {
        serde_json::error::Category::Data if field != "." => {
            crate::error::Error::InvalidRequest(format!("field '{field}' is not valid: {rule}"))
        }
        serde_json::error::Category::Data => {
            crate::error::Error::InvalidRequest(format!("the body does not fit this route: {rule}"))
        }
        serde_json::error::Category::Eof => crate::error::Error::InvalidRequest(format!("the body ends early: {rule}")),
        _ => crate::error::Error::InvalidRequest(format!("the body is not valid JSON: {rule}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: NestedLimits = NestedLimits { max_rank: 8, null_is_nan: false, expected: 0 };

    #[test]
    fn nested_arrays_parse_to_shape_and_data() {
        assert_eq!(nested::<f32>("[[1, 2], [3, 4.5]]", LIM, 100).unwrap(), (vec![2, 2], vec![1.0, 2.0, 3.0, 4.5]));
        assert_eq!(nested::<i64>("7", LIM, 100).unwrap(), (vec![], vec![7]));
        assert_eq!(nested::<i64>("[[], []]", LIM, 100).unwrap(), (vec![2, 0], vec![]));
        assert_eq!(nested::<bool>("[true, 0, 1]", LIM, 100).unwrap(), (vec![3], vec![true, false, true]));
        let nan = nested::<f64>("[null]", NestedLimits { null_is_nan: true, ..LIM }, 10).unwrap();
        assert!(nan.1[0].is_nan());
    }

    #[test]
    fn hostile_arrays_are_refused() {
        assert!(matches!(nested::<f32>("[[1, 2], [3]]", LIM, 100), Err(NestedError::NotRectangular(_))));
        assert!(matches!(nested::<f32>("[[1, 2], 3]", LIM, 100), Err(NestedError::NotRectangular(_))));
        assert!(matches!(nested::<f32>("[1, [2]]", LIM, 100), Err(NestedError::NotRectangular(_))));
        assert!(matches!(nested::<f32>("[1, 2, 3]", LIM, 2), Err(NestedError::TooMany)));
        assert!(matches!(nested::<f32>("[[[[[[[[[1]]]]]]]]]", LIM, 2), Err(NestedError::TooDeep(8))));
        assert!(matches!(nested::<i8>("[300]", LIM, 2), Err(NestedError::Value(v)) if v == "300"));
        assert!(matches!(nested::<i64>("[1.5]", LIM, 2), Err(NestedError::Value(_))));
        assert!(matches!(nested::<f32>("[1e39]", LIM, 2), Err(NestedError::Value(_))));
        assert!(matches!(nested::<f32>("[1, 2", LIM, 2), Err(NestedError::Json(_))));
        // An element budget stops the parse early: a million rows of [0] are not read.
        let rows = format!("[{}[0]]", "[0],".repeat(1_000_000));
        assert!(matches!(nested::<f32>(&rows, LIM, 1000), Err(NestedError::TooMany)));
    }

    #[test]
    fn values_are_counted_without_a_tree() {
        assert_eq!(count_values(r#"{"a": [1, 2, {"b": null}], "c": "x"}"#, 100), Ok(Some(7)));
        assert_eq!(count_values("[[0],[0],[0]]", 5), Ok(None));
        assert!(count_values("[1,", 5).is_err());
    }

    #[test]
    fn tensors_write_nested_flat_and_by_row() {
        let t = Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1.0, 0.1, f32::NAN, 4.0]).unwrap());
        assert_eq!(serde_json::to_string(&Nested(&t)).unwrap(), "[[1.0,0.1],[null,4.0]]");
        assert_eq!(serde_json::to_string(&Flat(&t)).unwrap(), "[1.0,0.1,null,4.0]");
        assert_eq!(serde_json::to_string(&Rows { tensor: &t, row: 1 }).unwrap(), "[null,4.0]");
        let s = Tensor::I64(ArrayD::from_shape_vec(IxDyn(&[]), vec![5]).unwrap());
        assert_eq!(serde_json::to_string(&Nested(&s)).unwrap(), "5");
        let outputs = vec![("a".to_string(), t.clone()), ("b".to_string(), t)];
        let records = serde_json::to_string(&Records { outputs: &outputs, rows: 2 }).unwrap();
        assert_eq!(records, r#"[{"a":[1.0,0.1],"b":[1.0,0.1]},{"a":[null,4.0],"b":[null,4.0]}]"#);
    }
}
