#!/usr/bin/env bash
# End-to-end check of iris-mlops on a real cluster, after `skaffold run` (or during `skaffold
# dev`): every rollout ready; /predict through a port-forward; the API's target up in
# Prometheus; the dashboard found through Grafana's API via the ingress; five suggestions start
# fine-tune pods and a new version is served; a run triggered from the Prefect API with
# parameters (as the UI does) completes in a pod. Needs kubectl, curl, python3.
#   scripts/k8s-e2e.sh [KUBE_CONTEXT]        (make k8s-e2e)
set -euo pipefail
ctx="${1:-kind-iris-mlops}"
k() { kubectl --context "$ctx" "$@"; }
ns=mlops
step() { echo "== $*"; }
forwards=()
trap 'for p in "${forwards[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
forward() {  # namespace service local:remote
  k -n "$1" port-forward "svc/$2" "$3" >/dev/null 2>&1 &
  forwards+=($!)
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:${3%%:*}/" && return; sleep 0.2; done
}
wait_for() {  # seconds description command...
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || { echo "FAIL: $what (not within ${limit} s)"; exit 1; }
    sleep 3
  done
  echo "ok: $what"
}

step "every rollout ready"
for n in traefik monitoring mlops; do
  for d in $(k -n "$n" get deploy -o name); do k -n "$n" rollout status "$d" --timeout=600s; done
  for s in $(k -n "$n" get statefulset -o name); do k -n "$n" rollout status "$s" --timeout=600s; done
done
k -n "$ns" wait --for=condition=complete job -l app.kubernetes.io/component=training --timeout=900s
k -n "$ns" wait --for=condition=complete job -l app.kubernetes.io/component=registration --timeout=600s

step "/predict through a port-forward"
forward "$ns" iris-api 18000:8000
curl -sf http://127.0.0.1:18000/v2/health/ready
answer=$(curl -sf http://127.0.0.1:18000/predict -H 'content-type: application/json' \
  -d '{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}')
echo "$answer"
python3 -c 'import json,sys; a=json.loads(sys.argv[1]); assert a["class_name"]=="Iris-setosa", a' "$answer"

step "the API's target is up in Prometheus"
forward monitoring kps-prometheus 19090:9090
wait_for 120 'up{job="api"} == 1' python3 - <<'PY'
import json, urllib.request, urllib.parse
q = urllib.parse.quote('up{job="api"}')
r = json.load(urllib.request.urlopen(f"http://127.0.0.1:19090/api/v1/query?query={q}"))["data"]["result"]
assert r and all(x["value"][1] == "1" for x in r), r
PY

step "the dashboard through Grafana's API via the ingress"
password=$(k -n monitoring get secret kps-grafana -o jsonpath='{.data.admin-password}' | base64 -d)
wait_for 120 "dashboard iris-mlops in Grafana" \
  curl -sf -u "admin:$password" http://grafana.localtest.me/api/dashboards/uid/iris-mlops

step "five suggestions start fine-tune pods and a new version is served"
token=$(k -n "$ns" get secret iris-feedback-token -o jsonpath='{.data.token}' | base64 -d)
before=$(curl -sf http://127.0.0.1:18000/model | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
for c in Iris-setosa Iris-versicolor Iris-virginica Iris-setosa Iris-versicolor; do
  case $c in
    Iris-setosa) f='"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2' ;;
    Iris-versicolor) f='"sepal_length": 6.4, "sepal_width": 3.2, "petal_length": 4.5, "petal_width": 1.5' ;;
    *) f='"sepal_length": 5.8, "sepal_width": 2.7, "petal_length": 5.1, "petal_width": 1.9' ;;
  esac
  curl -sf http://127.0.0.1:18000/suggest -H "Authorization: Bearer $token" \
    -H 'content-type: application/json' -d "{$f, \"class_name\": \"$c\"}"; echo
done
wait_for 300 "a flow-run pod started" sh -c "kubectl --context $ctx -n $ns get pods -l app.kubernetes.io/component=flow-run -o name | grep -q ."
wait_for 600 "a version newer than $before served" sh -c \
  "curl -sf http://127.0.0.1:18000/model | python3 -c 'import json,sys; assert int(json.load(sys.stdin)[\"version\"]) > $before'"

step "a run triggered from the Prefect API with parameters completes in a pod"
forward "$ns" prefect-server 14200:4200
python3 - <<'PY'
import json, time, urllib.request
api = "http://127.0.0.1:14200/api"
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
