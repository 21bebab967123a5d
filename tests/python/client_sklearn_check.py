"""zoo's Python client deploys fitted scikit-learn objects (as skops MLflow
bundles, never pickles) and zoo answers as scikit-learn does. Run by
tests/tests/python_client.rs with the Python of scripts/make-sklearn-bundles'
environment (scikit-learn, skops, mlflow): ZOO_URL and ZOO_API_KEY name the server.
Prints "all checks passed"."""

import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeRegressor

import zoo

X, y = load_iris(return_X_y=True)
rng = np.random.default_rng(3)
rows = X[rng.choice(len(X), 12, replace=False)]

# A classifier pipeline: labels exactly as scikit-learn predicts them.
clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
v = zoo.deploy(clf, "py-iris", example=X[:5], progress=False)
assert v.servable, v.info
got = v.predict(rows.tolist())
assert got["predictions"] == clf.predict(rows).tolist(), (got, clf.predict(rows))
print("classifier pipeline: labels equal scikit-learn's on", len(rows), "rows")

# A regressor without an example: values to 1e-6.
reg = DecisionTreeRegressor(max_depth=4, random_state=0).fit(X[:, :3], X[:, 3])
v = zoo.deploy(reg, "py-tree", progress=False)
assert v.servable, v.info
got = np.array(v.predict(rows[:, :3].tolist())["predictions"], dtype=np.float64)
assert np.abs(got - reg.predict(rows[:, :3])).max() < 1e-6, (got, reg.predict(rows[:, :3]))
print("regressor: values equal scikit-learn's")
print("all checks passed")
