#!/usr/bin/env bash
# End-to-end check of iris-mlops on a real cluster, after `skaffold run` (or during `skaffold
# dev`): every rollout ready; /predict through a port-forward; the API's target up in
# Prometheus; the dashboard found through Grafana's API via the ingress; five suggestions start
# fine-tune pods and a new version is served; a run triggered from the Prefect API with
# parameters (as the UI does) completes in a pod. Needs kubectl, curl, python3.
#   scripts/k8s-e2e.sh [KUBE_CONTEXT]        (make k8s-e2e)
# Its port-forwards listen on free ports of their own (never skaffold's or `make up`'s) and
# end with the script. INGRESS_PORT: the host port k8s/kind-config.yaml maps to the ingress
# (80). tests/k8s/test_e2e_script.py runs it against a fake kubectl.
set -euo pipefail
ctx="${1:-kind-iris-mlops}"
ingress_port="${INGRESS_PORT:-80}"
k() { kubectl --context "$ctx" "$@"; }
ns=mlops
step() { echo "== $*"; }
forwards=()
logs="$(mktemp -d)"
cleanup() {
  for p in ${forwards[@]+"${forwards[@]}"}; do kill "$p" 2>/dev/null || true; done
  rm -rf "$logs"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# forward NAMESPACE SERVICE PORT: kubectl port-forward from a free local port, which it sets in
# $forward_port. kubectl itself runs in the background (so the EXIT trap ends it, not a
# subshell around it); the forward counts once that kubectl answers on the port.
forward() {
  local port log
  port="$(free_port)"
  log="$logs/forward-$2.log"
  kubectl --context "$ctx" -n "$1" port-forward "svc/$2" "$port:$3" >"$log" 2>&1 &
  local pid=$!
  forwards+=("$pid")
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || { echo "FAIL: port-forward to svc/$2 (port $port) ended: $(cat "$log")"; exit 1; }
    if curl -s --max-time 2 -o /dev/null "http://127.0.0.1:$port/"; then forward_port=$port; return; fi
    sleep 0.2
  done
  echo "FAIL: port-forward to svc/$2 (port $port) does not answer: $(cat "$log")"
  exit 1
}
# wait_for SECONDS DESCRIPTION COMMAND...: run the command every 3 s until it succeeds, at most
# SECONDS / 3 times. Each try runs the whole command again: give code as an argument or a
# function, never as a here-document (a here-document is read by the first try alone).
wait_for() {
  local limit=$1 what=$2; shift 2
  local tries=$(((limit + 2) / 3)) try=1
  until "$@" >/dev/null 2>&1; do
    [ "$try" -lt "$tries" ] || { echo "FAIL: $what (not within ${limit} s, $tries tries)"; exit 1; }
    try=$((try + 1))
    sleep 3
  done
  echo "ok: $what"
}
api_target_up() {  # PORT: Prometheus there has up{job="api"} == 1 for every target
  python3 - "$1" <<'PY'
import json, sys, urllib.parse, urllib.request
q = urllib.parse.quote('up{job="api"}')
url = f"http://127.0.0.1:{sys.argv[1]}/api/v1/query?query={q}"
r = json.load(urllib.request.urlopen(url, timeout=10))["data"]["result"]
assert r and all(x["value"][1] == "1" for x in r), r
PY
}

step "every rollout ready"
for n in traefik monitoring mlops; do
  for d in $(k -n "$n" get deploy -o name); do k -n "$n" rollout status "$d" --timeout=600s; done
  for s in $(k -n "$n" get statefulset -o name); do k -n "$n" rollout status "$s" --timeout=600s; done
done
k -n "$ns" wait --for=condition=complete job -l app.kubernetes.io/component=training --timeout=900s
k -n "$ns" wait --for=condition=complete job -l app.kubernetes.io/component=registration --timeout=600s

step "/predict through a port-forward"
forward "$ns" iris-api 8000
api="http://127.0.0.1:$forward_port"
curl -sf "$api/v2/health/ready"
answer=$(curl -sf "$api/predict" -H 'content-type: application/json' \
  -d '{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}')
echo "$answer"
python3 -c 'import json,sys; a=json.loads(sys.argv[1]); assert a["class_name"]=="Iris-setosa", a' "$answer"

step "the API's target is up in Prometheus"
forward monitoring kps-prometheus 9090
wait_for 120 'up{job="api"} == 1' api_target_up "$forward_port"

step "the dashboard through Grafana's API via the ingress"
password=$(k -n monitoring get secret kps-grafana -o jsonpath='{.data.admin-password}' | base64 -d)
# grafana.localtest.me is 127.0.0.1 in public DNS, which resolvers with DNS-rebinding protection
# refuse to answer: curl is told the address instead
grafana="grafana.localtest.me"
[ "$ingress_port" = 80 ] || grafana="$grafana:$ingress_port"
wait_for 120 "dashboard iris-mlops in Grafana" \
  curl -sf --resolve "grafana.localtest.me:$ingress_port:127.0.0.1" -u "admin:$password" \
  "http://$grafana/api/dashboards/uid/iris-mlops"

step "five suggestions start fine-tune pods and a new version is served"
token=$(k -n "$ns" get secret iris-feedback-token -o jsonpath='{.data.token}' | base64 -d)
before=$(curl -sf "$api/model" | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
for c in Iris-setosa Iris-versicolor Iris-virginica Iris-setosa Iris-versicolor; do
  case $c in
    Iris-setosa) f='"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2' ;;
    Iris-versicolor) f='"sepal_length": 6.4, "sepal_width": 3.2, "petal_length": 4.5, "petal_width": 1.5' ;;
    *) f='"sepal_length": 5.8, "sepal_width": 2.7, "petal_length": 5.1, "petal_width": 1.9' ;;
  esac
  curl -sf "$api/suggest" -H "Authorization: Bearer $token" \
    -H 'content-type: application/json' -d "{$f, \"class_name\": \"$c\"}"; echo
done
wait_for 300 "a flow-run pod started" sh -c "kubectl --context $ctx -n $ns get pods -l app.kubernetes.io/component=flow-run -o name | grep -q ."
wait_for 600 "a version newer than $before served" sh -c \
  "curl -sf $api/model | python3 -c 'import json,sys; assert int(json.load(sys.stdin)[\"version\"]) > $before'"

step "a run triggered from the Prefect API with parameters completes in a pod"
forward "$ns" prefect-server 4200
python3 - "$forward_port" <<'PY'
import json, sys, time, urllib.request
api = f"http://127.0.0.1:{sys.argv[1]}/api"
def call(method, path, body=None):
    req = urllib.request.Request(api + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=30))
dep = call("GET", "/deployments/name/iris-finetune/kubernetes")
params = {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5, "class_name": "Iris-virginica"}
run = call("POST", f"/deployments/{dep['id']}/create_flow_run", {"parameters": params})
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    state = call("GET", f"/flow_runs/{run['id']}")["state"]["type"]
    if state in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
        break
    time.sleep(5)
assert state == "COMPLETED", state
print("flow run", run["name"], state)
PY
echo "== all checks passed"
