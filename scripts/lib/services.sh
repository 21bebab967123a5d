# Throwaway servers on loopback for scripts/test and scripts/soak. Source it after
# setting `work` (a scratch directory); call `stop_services` on exit.
#   start_postgres   a fresh cluster (Debian's postgresql, installed if missing);
#                    sets pg_url
#   start_s3         s3s-fs 0.14.1 (cargo install into the cache once); sets
#                    s3_endpoint, s3_bin, s3_port and the AWS_* variables (exported)
pg_dir=
pg_bin=
s3_pid=
_free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
_as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
_apt_install() {
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; fi
}

start_postgres() {
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
  if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
    echo "installing Debian's postgresql (initdb/pg_ctl not found)"
    _apt_install postgresql
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
  fi
  pg_dir="$work/pg"
  mkdir -p "$pg_dir"
  if [ "$(id -u)" = 0 ]; then
    # initdb runs as the postgres user, which must reach its directory.
    chmod 0755 "$work"
    chown postgres "$pg_dir"
  fi
  local port
  port=$(_free_port)
  _as_pg "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust >/dev/null
  _as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
    -o "-p $port -k $pg_dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null
  pg_url="postgres://postgres@127.0.0.1:$port/postgres"
  echo "started a throwaway Postgres cluster on 127.0.0.1:$port"
}

start_s3() {
  local tools="${ZOO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/zoo}/tools"
  if [ ! -x "$tools/bin/s3s-fs" ]; then
    cargo install s3s-fs --version 0.14.1 --features binary --locked --root "$tools" --quiet
  fi
  s3_bin="$tools/bin/s3s-fs"
  s3_port=$(_free_port)
  mkdir -p "$work/s3"
  export AWS_ACCESS_KEY_ID=zoo-test AWS_SECRET_ACCESS_KEY=zoo-test-secret AWS_REGION=us-east-1
  export AWS_ENDPOINT_URL="http://127.0.0.1:$s3_port"
  s3_endpoint=$AWS_ENDPOINT_URL
  "$s3_bin" --host 127.0.0.1 --port "$s3_port" --access-key "$AWS_ACCESS_KEY_ID" \
    --secret-key "$AWS_SECRET_ACCESS_KEY" "$work/s3" >"$work/s3.log" 2>&1 &
  s3_pid=$!
  for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$s3_port") 2>/dev/null && break; sleep 0.1; done
  echo "s3s-fs on $s3_endpoint"
}

stop_services() {
  if [ -n "$s3_pid" ]; then kill "$s3_pid" 2>/dev/null || true; fi
  if [ -n "$pg_dir" ]; then _as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true; fi
}
