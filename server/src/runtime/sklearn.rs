//! scikit-learn models from skops archives, evaluated natively (no Python): the
//! model is read by `zoo_formats::skops` and computed here with the same
//! arithmetic scikit-learn 1.9 uses, so predictions match its `predict` and
//! `predict_proba` (trees compare float32 features, as scikit-learn casts them).

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use zoo_api::Signature;
use zoo_formats::skops::{Classes, Estimator, Model, Transform, Tree};

use super::{LoadedModel, RunLimits, Runtime, RuntimeError, Tensor, Tensors};

pub struct SklearnRuntime;

impl Runtime for SklearnRuntime {
    fn name(&self) -> &'static str {
        "sklearn"
    }

    fn load(
        &self,
        model: &Path,
        signature: &Signature,
        _limits: &RunLimits,
    ) -> Result<Box<dyn LoadedModel>, RuntimeError> {
        let err = |m: String| RuntimeError::Load { runtime: "sklearn", message: m };
        let (model, _) = zoo_formats::skops::load(model, &zoo_formats::Limits::default())
            .map_err(|e| err(e.to_string()))?
            .map_err(|info| err(info.unservable_reason.unwrap_or_else(|| "unsupported estimator".into())))?;
        let proba = signature.outputs.first().is_some_and(|o| o.name == "probabilities");
        if proba && model.estimator.classes().is_none() {
            return Err(err("predict_proba on a regressor".into()));
        }
        let output = signature.outputs.first().map(|o| o.name.clone()).unwrap_or_else(|| "predictions".into());
        Ok(Box::new(SklearnModel { model, proba, output }))
    }
}

struct SklearnModel {
    model: Model,
    /// Answer class probabilities instead of labels (`predict_fn: predict_proba`).
    proba: bool,
    output: String,
}

fn expit(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn softmax(v: &[f64]) -> Vec<f64> {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = v.iter().map(|x| (x - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|x| x / sum).collect()
}

/// The first index of the largest value (numpy's argmax).
fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The average of the trees' leaf values.
fn forest(trees: &[Tree], x: &[f64]) -> Vec<f64> {
    let mut sum = vec![0.0; trees[0].width];
    for t in trees {
        for (s, v) in sum.iter_mut().zip(t.predict(x)) {
            *s += v;
        }
    }
    sum.iter().map(|s| s / trees.len() as f64).collect()
}

/// One row's answer: a class index with the probabilities, or a value.
enum Answer {
    Class(usize, Vec<f64>),
    Value(f64),
}

fn predict_row(e: &Estimator, x: &[f64]) -> Answer {
    match e {
        Estimator::Linear { coef, intercept } => Answer::Value(dot(x, coef) + intercept),
        Estimator::Logistic { coef, intercept, .. } => {
            let d: Vec<f64> = coef.iter().zip(intercept).map(|(c, b)| dot(x, c) + b).collect();
            if d.len() == 1 {
                let p1 = expit(d[0]);
                Answer::Class(usize::from(d[0] > 0.0), vec![1.0 - p1, p1])
            } else {
                Answer::Class(argmax(&d), softmax(&d))
            }
        }
        Estimator::DecisionTreeClassifier { tree, .. } => {
            let p = tree.predict(x).to_vec();
            Answer::Class(argmax(&p), p)
        }
        Estimator::DecisionTreeRegressor { tree } => Answer::Value(tree.predict(x)[0]),
        Estimator::RandomForestClassifier { trees, .. } => {
            let p = forest(trees, x);
            Answer::Class(argmax(&p), p)
        }
        Estimator::RandomForestRegressor { trees } => Answer::Value(forest(trees, x)[0]),
        Estimator::GradientBoostingClassifier { init, learning_rate, stages, .. } => {
            let mut raw = init.clone();
            for stage in stages {
                for (r, t) in raw.iter_mut().zip(stage) {
                    *r += learning_rate * t.predict(x)[0];
                }
            }
            if raw.len() == 1 {
                let p1 = expit(raw[0]);
                Answer::Class(usize::from(raw[0] >= 0.0), vec![1.0 - p1, p1])
            } else {
                Answer::Class(argmax(&raw), softmax(&raw))
            }
        }
        Estimator::GradientBoostingRegressor { init, learning_rate, stages } => {
            Answer::Value(stages.iter().fold(*init, |raw, t| raw + learning_rate * t.predict(x)[0]))
        }
    }
}

/// The StandardScaler steps, in float32 when the input is float32 (scikit-learn
/// keeps the input's dtype and casts its statistics to it).
fn transform(transforms: &[Transform], x: &mut [f64], f32_input: bool) {
    for Transform::Scale { mean, scale } in transforms {
        for (j, v) in x.iter_mut().enumerate() {
            if f32_input {
                let mut w = *v as f32;
                if let Some(m) = mean {
                    w -= m[j] as f32;
                }
                if let Some(s) = scale {
                    w /= s[j] as f32;
                }
                *v = w as f64;
            } else {
                if let Some(m) = mean {
                    *v -= m[j];
                }
                if let Some(s) = scale {
                    *v /= s[j];
                }
            }
        }
    }
}

impl LoadedModel for SklearnModel {
    fn run(&mut self, inputs: Tensors) -> Result<Tensors, RuntimeError> {
        let (_, x) = inputs.into_iter().next().ok_or_else(|| RuntimeError::Input("missing input 'X'".into()))?;
        let (rows, f32_input): (Vec<f64>, bool) = match &x {
            Tensor::F64(a) => (a.iter().copied().collect(), false),
            Tensor::F32(a) => (a.iter().map(|v| *v as f64).collect(), true),
            other => return Err(RuntimeError::Input(format!("X must be float, got {}", other.dtype().as_str()))),
        };
        let width = self.model.n_features;
        let &[n, w] = x.shape() else {
            return Err(RuntimeError::Input(format!("X must be [rows, {width}], got {:?}", x.shape())));
        };
        if w != width {
            return Err(RuntimeError::Input(format!("X must have {width} columns, got {w}")));
        }
        if n == 0 {
            return Err(RuntimeError::Input("X has no rows".into()));
        }
        if !self.model.estimator.accepts_nan() && rows.iter().any(|v| !v.is_finite()) {
            return Err(RuntimeError::Input("X contains NaN or infinity, which this estimator refuses".into()));
        }
        let classes = self.model.estimator.classes();
        let mut labels = Vec::with_capacity(n);
        let mut values = Vec::with_capacity(n);
        let mut probabilities = Vec::new();
        for row in rows.chunks(width) {
            let mut row = row.to_vec();
            transform(&self.model.transforms, &mut row, f32_input);
            match predict_row(&self.model.estimator, &row) {
                Answer::Class(i, p) => {
                    labels.push(i);
                    probabilities.extend(p);
                }
                Answer::Value(v) => values.push(v),
            }
        }
        let shape = |d: &[usize]| IxDyn(d);
        let bad = |e: ndarray::ShapeError| RuntimeError::Run(e.to_string());
        let out = match classes {
            Some(c) if self.proba => {
                Tensor::F64(ArrayD::from_shape_vec(shape(&[n, c.len()]), probabilities).map_err(bad)?)
            }
            Some(Classes::Int(c)) => {
                Tensor::I64(ArrayD::from_shape_vec(shape(&[n]), labels.iter().map(|i| c[*i]).collect()).map_err(bad)?)
            }
            Some(Classes::Str(c)) => Tensor::Str(
                ArrayD::from_shape_vec(shape(&[n]), labels.iter().map(|i| c[*i].clone()).collect()).map_err(bad)?,
            ),
            None => Tensor::F64(ArrayD::from_shape_vec(shape(&[n]), values).map_err(bad)?),
        };
        Ok(vec![(self.output.clone(), out)])
    }
}
