# The one build every script uses (run, test, bench), so that they share one
# target directory and compile once: the whole workspace with the TorchScript
# worker (feature zoo-torch/torch), linked against libtorch from scripts/fetch-libtorch.
# Sourcing this fetches libtorch (once, into the cache) and sets:
#   LIBTORCH        for the tch build (exported)
#   ZOO_LIBTORCH    for the server's TorchScript worker (exported)
#   cargo_features  the cargo arguments that select the feature set (an array)
LIBTORCH="$("$(dirname "${BASH_SOURCE[0]}")/../fetch-libtorch")"
ZOO_LIBTORCH="$LIBTORCH"
export LIBTORCH ZOO_LIBTORCH
cargo_features=(--features zoo-torch/torch)
