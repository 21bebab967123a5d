# zoo_venv NAME REQUIREMENTS: a virtual environment in the cache with the pinned
# packages of REQUIREMENTS (from PyPI), made once and again when the file changes;
# prints its directory. Never installs globally. Needs $cache and $py.
zoo_venv() {
  local name=$1 reqs=$2 venv stamp
  venv="$cache/venv-$name"
  stamp="$venv/.zoo-$(sha256sum "$reqs" | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    printf 'installing %s into %s\n' "$reqs" "$venv" >&2
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$reqs" >&2
    touch "$stamp"
  fi
  echo "$venv"
}
