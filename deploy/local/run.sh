#!/usr/bin/env bash
# The main job, locally: the exectrack consumer fed by the load simulator, with a
# live view of executions arriving in the table, and the read side's web page
# (`exectrack-consumer serve`, its URL printed). Expects the stack to be up and
# migrated (`make run` does both first). The consumer and the web server are
# stopped on exit (SIGTERM: the consumer finishes its batch and commits); the
# stack keeps running (`make down`).
#
#   EXECUTIONS=5000 RATE=2000 bash deploy/local/run.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="$root/.venv/bin"
state="${EXECTRACK_LOCAL_DIR:-$root/.local}"
executions="${EXECUTIONS:-5000}"
rate="${RATE:-2000}"

eval "$(bash "$root/deploy/local/stack.sh" env)"
mkdir -p "$state/logs"
consumer_log="$state/logs/consumer.log"
simulate_log="$state/logs/simulate.log"
serve_log="$state/logs/serve.log"
read_port="${EXECTRACK_READ__PORT:-8081}"

"$bin/exectrack-consumer" consume >"$consumer_log" 2>&1 &
consumer=$!
"$bin/exectrack-consumer" serve --port "$read_port" >"$serve_log" 2>&1 &
server=$!
simulator=""
cleanup() {
  [ -n "$simulator" ] && kill "$simulator" 2>/dev/null || true
  if kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server" && wait "$server" || true
  fi
  if kill -0 "$consumer" 2>/dev/null; then
    kill -TERM "$consumer" && wait "$consumer" || true
  fi
  echo "consumer and web page stopped (logs: $consumer_log, $serve_log); the stack still runs: make down to stop it"
}
trap cleanup EXIT

echo "consumer started (pid $consumer, log: $consumer_log, metrics: http://127.0.0.1:8080/metrics)"
echo "web page: http://127.0.0.1:$read_port/  (API: http://127.0.0.1:$read_port/docs, log: $serve_log)"
echo "simulating $executions executions at $rate events/s (log: $simulate_log)"
"$bin/exectrack-producer" simulate --executions "$executions" --rate "$rate" --no-progress \
  >"$simulate_log" 2>&1 &
simulator=$!

"$bin/exectrack-consumer" watch --interval 1 --until-idle 8
wait "$simulator" && simulator=""
tail -n 3 "$simulate_log"
if [ -t 0 ] && kill -0 "$server" 2>/dev/null; then
  # at a terminal the page stays up for browsing; Ctrl-C stops it and the consumer
  echo "web page still at http://127.0.0.1:$read_port/ (Ctrl-C to stop)"
  wait "$server" || true
fi
