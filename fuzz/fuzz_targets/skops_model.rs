//! A skops archive (scikit-learn in MLflow bundles): zip, schema.json, .npy arrays
//! and the tree checks. Whatever the bytes, reading ends in a model, a refusal
//! with the reason, or an error: never a panic, never unbounded memory. A model it
//! accepts has only trees whose every path ends at a leaf within bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use zoo_formats::skops::{Estimator, Tree};

fn check(tree: &Tree, n_features: usize) {
    // Walking any row must stay in bounds and terminate.
    for x in [vec![0.0; n_features], vec![f64::NAN; n_features], vec![1e30; n_features]] {
        let leaf = tree.leaf(&x);
        assert!(leaf < tree.nodes.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.skops");
    std::fs::write(&path, data).unwrap();
    let limits = zoo_formats::Limits { max_bundle_size: 64 << 20, ..Default::default() };
    if let Ok(Ok((model, _))) = zoo_formats::skops::load(&path, &limits) {
        let n = model.n_features;
        match &model.estimator {
            Estimator::DecisionTreeClassifier { tree, .. } | Estimator::DecisionTreeRegressor { tree } => check(tree, n),
            Estimator::RandomForestClassifier { trees, .. } | Estimator::RandomForestRegressor { trees } => {
                trees.iter().for_each(|t| check(t, n))
            }
            Estimator::GradientBoostingClassifier { stages, .. } => stages.iter().flatten().for_each(|t| check(t, n)),
            Estimator::GradientBoostingRegressor { stages, .. } => stages.iter().for_each(|t| check(t, n)),
            _ => {}
        }
    }
});
