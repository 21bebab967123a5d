#!/usr/bin/env python3
"""Generate MLflow sklearn bundles (skops format) plus reference outputs.

Usage:  python make_sklearn_bundles.py OUT_DIR [--only CASE[,CASE...]] [--infer-requirements]

For every case a directory OUT_DIR/<case>/ is written containing a normal
MLflow model directory (MLmodel, model.skops or model.pkl, conda.yaml,
python_env.yaml, requirements.txt, input_example.json,
serving_input_example.json) plus `expected.json` with reference outputs.

Tested with: scikit-learn 1.9.1, skops 0.16.0, mlflow 3.17.2, numpy 2.4.6,
pandas 3.1.1, Python 3.11.

expected.json layout (all floats are written with Python repr, i.e. they
round-trip to the exact float64; NaN is written as null):

  case, description, kind ("classifier" | "regressor"),
  servable (bool: should a native skops server accept it),
  refusal_reason (only when servable is false),
  estimator (repr), estimator_path (list of class names, pipeline first),
  serialization_format, pyfunc_predict_fn ("predict" | "predict_proba"),
  skops_trusted_types,
  input_kind ("dataframe" | "tensor"), columns (feature names or null),
  input_dtype ("float64" | "float32": float32 cases have signature type "float"
      and MLflow casts requests to float32; inputs are f32-representable),
  input_example_rows (N: the first N rows of row_sets.main.inputs are the
      bundle's input_example),
  classes (list, classifiers only), classes_dtype (numpy dtype str),
  versions {...},
  row_sets: {
    "main":  rows = input example + extra rows (always present)
    "nan":   rows containing NaN (present for every case; sklearn may refuse)
    "edge":  rows with a feature set exactly at / next to a split threshold
             (only bare tree-based estimators, float64 input); has "notes"
             per row: node, feature, threshold, variant, whether a naive f64
             comparison and the sklearn (f32-cast) comparison go left
    each row set: {
      inputs: [[float|null,...]],
      sklearn: {predict, predict_proba?, decision_function?, apply?}
               or {error: "..."}   (sklearn raised, e.g. NaN not allowed)
      pyfunc:  {dtype, values} or {error}   (mlflow.pyfunc model.predict on a
               DataFrame / ndarray with the same rows)
      serving: {request: <JSON body>, status: int, response: <parsed JSON>}
               (what `mlflow models serve` /invocations answers, computed
               in-process with mlflow.pyfunc.scoring_server.invocations)
    }
  }
  serving_variants (dataframe cases that are servable): {name: serving result}
      for other request shapes: reordered columns, dataframe_records,
      instances, columnar inputs, integers, extra column, missing column,
      zero rows.

Used by scripts/make-sklearn-bundles (scripts/test runs it); the end-to-end test
sklearn_bundles_match_scikit_learn deploys every case and compares zoo with it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
import traceback
import warnings

os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
os.environ.setdefault("MLFLOW_TRACKING_URI", "file:///tmp/mlruns-unused")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import sklearn  # noqa: E402
import skops  # noqa: E402
import skops.io as sio  # noqa: E402
import mlflow  # noqa: E402
import mlflow.pyfunc  # noqa: E402
import mlflow.sklearn  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402
from mlflow.pyfunc import scoring_server  # noqa: E402
from sklearn.datasets import load_diabetes, load_iris  # noqa: E402
from sklearn.ensemble import (  # noqa: E402
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor  # noqa: E402

import logging  # noqa: E402

logging.getLogger("mlflow").setLevel(logging.ERROR)

SEED = 0
IRIS_COLS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_NAMES = np.array(["setosa", "versicolor", "virginica"])


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------
def _shuffle(X: pd.DataFrame, y):
    perm = np.random.RandomState(SEED).permutation(len(X))
    X = X.iloc[perm].reset_index(drop=True)
    if isinstance(y, pd.Series):
        y = y.iloc[perm].reset_index(drop=True)
    else:
        y = np.asarray(y)[perm]
    return X, y


def iris(binary=False):
    d = load_iris()
    X = pd.DataFrame(d.data, columns=IRIS_COLS)
    y = d.target.astype(np.int64)
    if binary:  # versicolor (1) vs virginica (2): classes_ == [1, 2]
        m = y > 0
        X, y = X[m].reset_index(drop=True), y[m]
    return _shuffle(X, y)


def diabetes():
    d = load_diabetes()
    X = pd.DataFrame(d.data, columns=list(d.feature_names))
    return _shuffle(X, d.target.astype(np.float64))


def extra_rows(X: pd.DataFrame) -> np.ndarray:
    """8 more dataset rows + 2 synthetic rows (zeros; out of range)."""
    a = X.to_numpy(dtype=np.float64)
    rows = [a[i] for i in range(3, 11)]
    rows.append(np.zeros(a.shape[1]))
    rows.append(a.max(axis=0) * 3.0 - a.min(axis=0) * 2.0 + 0.125)
    return np.array(rows)


# --------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------
def _data(kind):
    if kind == "iris":
        return iris()
    if kind == "iris_binary":
        return iris(binary=True)
    if kind == "iris_str_unicode":  # y: numpy '<U10' -> classes_ dtype '<U10'
        X, y = iris()
        return X, IRIS_NAMES[y]
    if kind == "iris_binary_str_object":  # y: pandas str Series -> classes_ object
        X, y = iris(binary=True)
        return X, pd.Series(IRIS_NAMES[y])
    if kind == "iris_nan":  # ~10% NaN cells in training data
        X, y = iris()
        X = X.copy()
        mask = np.random.RandomState(SEED).rand(*X.shape) < 0.10
        X = X.mask(mask)
        return X, y
    if kind == "diabetes":
        return diabetes()
    if kind.endswith("_f32"):  # float32 DataFrame -> MLflow signature type "float"
        X, y = _data(kind[:-4])
        return X.astype(np.float32), y
    raise ValueError(kind)


def pipe(est, **scaler_kw):
    return make_pipeline(StandardScaler(**scaler_kw), est)


CASES = [
    # name, data kind, factory, description
    ("logreg_multiclass", "iris",
     lambda: LogisticRegression(max_iter=1000, random_state=SEED),
     "LogisticRegression (lbfgs, multinomial/softmax is the only multiclass mode in 1.9) on iris, classes [0,1,2]"),
    ("logreg_multiclass_proba_fn", "iris",
     lambda: LogisticRegression(max_iter=1000, random_state=SEED),
     "Same model saved with pyfunc_predict_fn='predict_proba': MLmodel python_function.predict_fn "
     "is predict_proba, pyfunc/serving return an (n, n_classes) float array",
     {"pyfunc_predict_fn": "predict_proba"}),
    ("logreg_binary", "iris_binary",
     lambda: LogisticRegression(max_iter=1000, random_state=SEED),
     "LogisticRegression binary on iris versicolor/virginica, classes [1,2], coef_ shape (1,4)"),
    ("logreg_binary_liblinear", "iris_binary",
     lambda: LogisticRegression(solver="liblinear", random_state=SEED),
     "LogisticRegression(solver='liblinear') binary; same predict math as lbfgs"),
    ("logreg_str_unicode", "iris_str_unicode",
     lambda: LogisticRegression(max_iter=1000, random_state=SEED),
     "LogisticRegression multiclass with numpy '<U10' string labels: classes_ stored as a '<U10' .npy"),
    ("pipe_scaler_logreg", "iris",
     lambda: pipe(LogisticRegression(max_iter=1000, random_state=SEED)),
     "Pipeline(StandardScaler, LogisticRegression) multiclass (same shape as shared iris-sklearn)"),
    ("pipe_scaler_logreg_f32", "iris_f32",
     lambda: pipe(LogisticRegression(max_iter=1000, random_state=SEED)),
     "Like shared iris-sklearn: fitted on float32 -> signature 'float', LR coef_/intercept_ stored as '<f4', scaler runs in float32"),
    ("linreg_f32", "diabetes_f32", lambda: LinearRegression(),
     "LinearRegression fitted on float32: coef_ '<f4', intercept_ numpy.float32 scalar, predict returns float32"),
    ("dtree_reg_f32", "diabetes_f32",
     lambda: DecisionTreeRegressor(max_depth=3, random_state=SEED),
     "DecisionTreeRegressor fitted on float32 (signature 'float'); tree arrays are the same dtypes as for float64"),
    ("linreg", "diabetes", lambda: LinearRegression(),
     "LinearRegression on diabetes (10 features); intercept_ is a numpy float64 scalar"),
    ("linreg_tensor", "diabetes_ndarray", lambda: LinearRegression(),
     "LinearRegression fitted on a plain ndarray: no feature_names_in_, tensor signature, serving via {'inputs': ...}"),
    ("ridge", "diabetes", lambda: Ridge(alpha=1.0),
     "Ridge(alpha=1.0) on diabetes"),
    ("pipe_scaler_ridge", "diabetes", lambda: pipe(Ridge(alpha=1.0)),
     "Pipeline(StandardScaler, Ridge)"),
    ("pipe_scaler_nomean_linreg", "diabetes",
     lambda: pipe(LinearRegression(), with_mean=False),
     "Pipeline(StandardScaler(with_mean=False), LinearRegression): mean_ still stored, must NOT be subtracted"),
    ("dtree_clf", "iris",
     lambda: DecisionTreeClassifier(max_depth=3, random_state=SEED),
     "DecisionTreeClassifier(max_depth=3)"),
    ("dtree_clf_nan", "iris_nan",
     lambda: DecisionTreeClassifier(max_depth=4, random_state=SEED),
     "DecisionTreeClassifier trained with NaN cells: missing_go_to_left is meaningful"),
    ("dtree_reg", "diabetes",
     lambda: DecisionTreeRegressor(max_depth=3, random_state=SEED),
     "DecisionTreeRegressor(max_depth=3)"),
    ("pipe_scaler_dtree_clf", "iris",
     lambda: pipe(DecisionTreeClassifier(max_depth=3, random_state=SEED)),
     "Pipeline(StandardScaler, DecisionTreeClassifier)"),
    ("rf_clf", "iris",
     lambda: RandomForestClassifier(n_estimators=5, max_depth=3, random_state=SEED),
     "RandomForestClassifier(n_estimators=5, max_depth=3)"),
    ("rf_reg", "diabetes",
     lambda: RandomForestRegressor(n_estimators=5, max_depth=3, random_state=SEED),
     "RandomForestRegressor(n_estimators=5, max_depth=3)"),
    ("pipe_scaler_rf_reg", "diabetes",
     lambda: pipe(RandomForestRegressor(n_estimators=4, max_depth=3, random_state=SEED)),
     "Pipeline(StandardScaler, RandomForestRegressor)"),
    ("gb_clf_binary", "iris_binary",
     lambda: GradientBoostingClassifier(n_estimators=5, max_depth=2, random_state=SEED),
     "GradientBoostingClassifier binary (log_loss), classes [1,2], estimators_ shape (5,1)"),
    ("gb_clf_binary_str", "iris_binary_str_object",
     lambda: GradientBoostingClassifier(n_estimators=4, max_depth=2, random_state=SEED),
     "GradientBoostingClassifier binary with pandas-str labels: classes_ is an object array (JSON list in schema)"),
    ("gb_clf_multi", "iris",
     lambda: GradientBoostingClassifier(n_estimators=4, max_depth=2, random_state=SEED),
     "GradientBoostingClassifier multiclass (log_loss, softmax), estimators_ shape (4,3)"),
    ("pipe_scaler_gb_clf_multi", "iris",
     lambda: pipe(GradientBoostingClassifier(n_estimators=3, max_depth=2, random_state=SEED)),
     "Pipeline(StandardScaler, GradientBoostingClassifier multiclass)"),
    ("gb_reg", "diabetes",
     lambda: GradientBoostingRegressor(n_estimators=5, max_depth=3, random_state=SEED),
     "GradientBoostingRegressor(squared_error), init_ DummyRegressor(mean)"),
    ("gb_reg_init_zero", "diabetes",
     lambda: GradientBoostingRegressor(n_estimators=5, max_depth=3, init="zero", random_state=SEED),
     "GradientBoostingRegressor(init='zero'): init_ is the JSON string \"zero\", raw starts at 0"),
    # ---- must be refused by a native skops server ----
    ("refuse_pickle_logreg", "iris",
     lambda: LogisticRegression(max_iter=1000, random_state=SEED),
     "LogisticRegression saved with serialization_format='cloudpickle' (model.pkl): must be refused"),
    ("refuse_unsupported_knn", "iris",
     lambda: KNeighborsClassifier(n_neighbors=3),
     "KNeighborsClassifier in skops format (contains KDTree/EuclideanDistance64): not servable natively"),
]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def jfloat(v):
    v = float(v)
    return None if math.isnan(v) else v


def jlist(a):
    """numpy -> JSON-able nested lists (NaN -> None, numpy scalars -> python)."""
    a = np.asarray(a)
    if a.dtype.kind == "f":
        return [jlist(x) for x in a] if a.ndim > 0 else jfloat(a)
    if a.dtype.kind in "iub":
        return a.tolist()
    return [jlist(x) for x in a] if a.ndim > 0 else (a.item() if hasattr(a, "item") else a)


def final_estimator(model):
    return model.steps[-1][1] if isinstance(model, Pipeline) else model


def estimator_path(model):
    if isinstance(model, Pipeline):
        return ["Pipeline"] + [type(s).__name__ for _, s in model.steps]
    return [type(model).__name__]


def first_tree(est):
    if hasattr(est, "tree_"):
        return est.tree_
    if hasattr(est, "estimators_"):
        e = est.estimators_
        e0 = e[0, 0] if isinstance(e, np.ndarray) and e.ndim == 2 else e[0]
        return e0.tree_
    return None


def sklearn_outputs(model, Xin):
    out = {}
    try:
        out["predict"] = jlist(model.predict(Xin))
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
    for meth in ("predict_proba", "decision_function"):
        if hasattr(model, meth):
            try:
                out[meth] = jlist(getattr(model, meth)(Xin))
            except Exception as e:  # noqa: BLE001
                out[meth] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
    fe = final_estimator(model)
    if hasattr(fe, "apply"):
        Xt = model[:-1].transform(Xin) if isinstance(model, Pipeline) else Xin
        try:
            out["apply"] = jlist(fe.apply(Xt))
        except Exception as e:  # noqa: BLE001
            out["apply"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
    return out


def pyfunc_outputs(pf, Xin):
    try:
        r = pf.predict(Xin)
        r = np.asarray(r)
        return {"dtype": str(r.dtype), "values": jlist(r)}
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}


def serving_outputs(pf, rows, columns, body=None):
    if body is not None:
        pass
    elif columns is None:
        body = {"inputs": rows}
    else:
        body = {"dataframe_split": {"columns": columns, "data": rows}}
    req = json.dumps(body, allow_nan=False)
    try:
        resp = scoring_server.invocations(
            req, "application/json", pf, pf.metadata.get_input_schema()
        )
        try:
            parsed = json.loads(resp.response)
        except Exception:  # noqa: BLE001
            parsed = resp.response
        return {"request": body, "status": resp.status, "response": parsed}
    except Exception as e:  # noqa: BLE001
        # the real server maps MlflowException(BAD_REQUEST/INVALID_PARAMETER_VALUE) to HTTP 400
        code = getattr(e, "error_code", None)
        return {
            "request": body,
            "status": 400 if code in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE") else 500,
            "error_code": code,
            "error": f"{type(e).__name__}: {str(e).splitlines()[-1][:300]}",
        }


INFER_REQS = False


def _pinned_requirements(fmt):
    reqs = [f"mlflow=={mlflow.__version__}", f"scikit-learn=={sklearn.__version__}",
            f"numpy=={np.__version__}", f"pandas=={pd.__version__}"]
    if fmt == "skops":
        reqs.append(f"skops=={skops.__version__}")
    else:
        import cloudpickle
        reqs.append(f"cloudpickle=={cloudpickle.__version__}")
    return reqs


def make_input(a, columns, dtype=np.float64):
    a = np.asarray(a, dtype=dtype)
    return a if columns is None else pd.DataFrame(a, columns=columns)


def nan_rows(base, model):
    """3 rows: NaN in the root split feature, NaN in another feature, all NaN."""
    fe = final_estimator(model)
    t = first_tree(fe)
    f_root = int(t.feature[0]) if t is not None and t.node_count > 1 else 0
    rows = base[:3].copy()
    rows[0, f_root] = np.nan
    rows[1, (f_root + 1) % rows.shape[1]] = np.nan
    rows[2, :] = np.nan
    return rows


def edge_rows(base, est):
    """Rows that put x[feature] exactly on / right next to split thresholds of
    the first tree (internal nodes 0..2).  Exercises: x <= threshold goes left,
    and X is cast to float32 BEFORE comparing with the float64 threshold."""
    t = first_tree(est)
    if t is None:
        return None
    rows, notes = [], []
    internal = [i for i in range(t.node_count) if t.children_left[i] != -1][:3]
    for node in internal:
        f, thr = int(t.feature[node]), float(t.threshold[node])
        t32 = np.float32(thr)
        variants = {
            "threshold_f64": thr,
            "nextafter_f64_up": float(np.nextafter(thr, np.inf)),
            "nextafter_f64_down": float(np.nextafter(thr, -np.inf)),
            "threshold_as_f32": float(t32),
            "nextafter_f32_up": float(np.nextafter(t32, np.float32(np.inf))),
            "nextafter_f32_down": float(np.nextafter(t32, np.float32(-np.inf))),
        }
        for label, v in variants.items():
            r = base[0].copy()
            r[f] = v
            rows.append(r)
            notes.append({"node": node, "feature": f, "threshold": thr, "variant": label,
                          "value": v, "f32_value_as_f64": float(np.float32(v)),
                          "naive_f64_goes_left": bool(v <= thr),
                          "f32_cast_goes_left": bool(float(np.float32(v)) <= thr)})
    return np.array(rows), notes


def row_set(model, pf, rows, columns, dtype=np.float64):
    rows = np.asarray(rows, dtype=dtype).astype(np.float64)  # f32 cases: f32-representable
    return {
        "inputs": jlist(rows),
        "sklearn": sklearn_outputs(model, make_input(rows, columns, dtype)),
        "pyfunc": pyfunc_outputs(pf, make_input(rows, columns, dtype)),
        "serving": serving_outputs(pf, jlist(rows), columns),
    }


def serving_variants(pf, rows, columns):
    """How MLflow's /invocations treats other request shapes (2 rows)."""
    rows = jlist(np.asarray(rows[:2], dtype=np.float64))
    recs = [dict(zip(columns, r)) for r in rows]
    rev = columns[::-1]
    variants = {
        "dataframe_split": {"dataframe_split": {"columns": columns, "data": rows}},
        "dataframe_split_reordered_columns": {"dataframe_split": {
            "columns": rev, "data": [r[::-1] for r in rows]}},
        "dataframe_records": {"dataframe_records": recs},
        "instances_records": {"instances": recs},
        "inputs_columnar": {"inputs": {c: [r[i] for r in rows] for i, c in enumerate(columns)}},
        "integers_for_double_columns": {"dataframe_split": {
            "columns": columns, "data": [[int(round(v)) for v in r] for r in rows]}},
        "extra_column_ignored": {"dataframe_split": {
            "columns": columns + ["unused_extra"], "data": [r + [1.0] for r in rows]}},
        "missing_column": {"dataframe_split": {
            "columns": columns[1:], "data": [r[1:] for r in rows]}},
        "empty_rows": {"dataframe_split": {"columns": columns, "data": []}},
    }
    out = {}
    for name, body in variants.items():
        r = serving_outputs(pf, None, None, body=body)
        out[name] = r
    return out


def build_case(out_dir, name, data_kind, factory, description, opts=None):
    opts = opts or {}
    predict_fn = opts.get("pyfunc_predict_fn", "predict")
    t0 = time.time()
    tensor = data_kind == "diabetes_ndarray"
    X, y = _data("diabetes" if tensor else data_kind)
    columns = None if tensor else list(X.columns)
    model = factory()
    Xfit = X.to_numpy() if tensor else X
    model.fit(Xfit, y)

    dtype = np.float32 if data_kind.endswith("_f32") else np.float64
    base = X.to_numpy(dtype=np.float64)
    main_rows = np.vstack([base[:3], extra_rows(X)])
    input_example = Xfit[:3] if tensor else X.iloc[:3]
    y_pred = getattr(model, predict_fn)(input_example if tensor else X)
    signature = infer_signature(Xfit if tensor else X, y_pred)

    path = os.path.join(out_dir, name)
    if os.path.exists(path):
        shutil.rmtree(path)

    if name.startswith("refuse_pickle"):
        fmt, trusted = "cloudpickle", None
    else:
        fmt = "skops"
        trusted = sio.get_untrusted_types(data=sio.dumps(model)) or None

    mlflow.sklearn.save_model(
        model,
        path,
        serialization_format=fmt,
        skops_trusted_types=trusted,
        signature=signature,
        input_example=input_example,
        metadata={"case": name, "description": description},
        pyfunc_predict_fn=predict_fn,
        # explicit requirements: skips MLflow's requirement inference, which
        # re-loads the model in a subprocess (~4 s per bundle)
        pip_requirements=None if INFER_REQS else _pinned_requirements(fmt),
    )

    pf = mlflow.pyfunc.load_model(path)
    fe = final_estimator(model)
    is_clf = sklearn.base.is_classifier(model)
    servable = not name.startswith("refuse_")
    expected = {
        "case": name,
        "description": description,
        "kind": "classifier" if is_clf else "regressor",
        "servable": servable,
        "estimator": repr(model),
        "estimator_path": estimator_path(model),
        "serialization_format": fmt,
        "pyfunc_predict_fn": predict_fn,
        "skops_trusted_types": trusted,
        "input_kind": "tensor" if tensor else "dataframe",
        "input_dtype": np.dtype(dtype).name,
        "columns": columns,
        "input_example_rows": 3,
        "versions": {
            "sklearn": sklearn.__version__, "skops": skops.__version__,
            "mlflow": mlflow.__version__, "numpy": np.__version__,
            "pandas": pd.__version__, "python": sys.version.split()[0],
        },
    }
    if not servable:
        expected["refusal_reason"] = (
            "pickle/cloudpickle serialization (model.pkl) is not loadable without Python"
            if fmt != "skops" else
            f"estimator {type(fe).__name__} is not supported natively "
            f"(untrusted skops types: {trusted})"
        )
    if is_clf:
        expected["classes"] = jlist(fe.classes_)
        expected["classes_dtype"] = str(fe.classes_.dtype)

    sets = {"main": row_set(model, pf, main_rows, columns, dtype)}
    sets["nan"] = row_set(model, pf, nan_rows(main_rows, model), columns, dtype)
    if (not isinstance(model, Pipeline) and first_tree(model) is not None
            and dtype == np.float64):
        er = edge_rows(main_rows, model)
        if er is not None:
            sets["edge"] = row_set(model, pf, er[0], columns, dtype)
            sets["edge"]["notes"] = er[1]
    expected["row_sets"] = sets
    if columns is not None and servable:
        expected["serving_variants"] = serving_variants(pf, main_rows, columns)

    # self-check: pyfunc and serving agree with sklearn on the main rows
    m = sets["main"]
    ref = m["sklearn"][predict_fn]
    assert m["pyfunc"].get("values") == ref, (name, m["pyfunc"])
    assert m["serving"].get("response", {}).get("predictions") == ref, name

    with open(os.path.join(path, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, allow_nan=False)
        f.write("\n")
    return time.time() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--only", default=None, help="comma separated case names")
    ap.add_argument("--infer-requirements", action="store_true",
                    help="let MLflow infer requirements.txt (slow: a subprocess per bundle)")
    ap.add_argument("--reference", default=None, metavar="BUNDLE",
                    help="instead: write what MLflow serves for BUNDLE's serving input example to OUT_DIR (a file)")
    args = ap.parse_args()
    if args.reference:
        pf = mlflow.pyfunc.load_model(args.reference)
        with open(os.path.join(args.reference, "serving_input_example.json")) as f:
            body = json.load(f)
        with open(args.out_dir, "w") as f:
            json.dump(serving_outputs(pf, None, None, body=body), f, indent=1)
            f.write("\n")
        return
    global INFER_REQS
    INFER_REQS = args.infer_requirements
    os.makedirs(args.out_dir, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None
    t_all = time.time()
    index = []
    for name, data_kind, factory, desc, *opts in CASES:
        if only and name not in only:
            continue
        try:
            dt = build_case(args.out_dir, name, data_kind, factory, desc, *opts)
            print(f"{name:28s} ok   {dt:6.2f}s", flush=True)
            index.append({"case": name, "description": desc,
                          "servable": not name.startswith("refuse_")})
        except Exception:  # noqa: BLE001
            print(f"{name:28s} FAILED", flush=True)
            traceback.print_exc()
            sys.exit(1)
    with open(os.path.join(args.out_dir, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")
    print(f"total {time.time() - t_all:.1f}s, {len(index)} cases -> {args.out_dir}")


if __name__ == "__main__":
    main()
