#!/usr/bin/env bash
# Before a deploy to kind (`make k8s-dev` and `make k8s-run` run it first): every tool at a
# version this project works with, and every pinned image the releases pull (k8s/images.txt)
# published, so a missing one shows here in seconds and not as ImagePullBackOff ten minutes
# into a deploy. Prints what is missing or too old, one line each, and exits 1 if anything is.
#   scripts/k8s-preflight.sh [IMAGES_FILE]        (make k8s-preflight)
# An image is asked of its registry with crane or skopeo where one is installed, else with
# `docker manifest inspect` (neither pulls it); one already in the local Docker counts too
# (`kind load docker-image` can bring it into the cluster). Needs network access to the
# registries; tests/k8s/test_preflight.py runs it against fake tools.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
images_file="${1:-$here/k8s/images.txt}"
started=$SECONDS
problems=()
problem() { problems+=("$1"); echo "MISSING: $1"; }

# version_at_least HAVE NEED: dotted numbers, compared field by field
version_at_least() {
  local IFS=.
  local -a have=($1) need=($2)
  local i
  for i in 0 1 2; do
    ((${have[i]:-0} > ${need[i]:-0})) && return 0
    ((${have[i]:-0} < ${need[i]:-0})) && return 1
  done
  return 0
}

# tool NAME MINIMUM WHY COMMAND...: COMMAND's program is installed and prints a version of
# NAME >= MINIMUM
tool() {
  local name=$1 minimum=$2 why=$3 out version
  shift 3
  if ! command -v "$1" >/dev/null 2>&1; then
    problem "$name: not installed (needs $minimum or newer: $why)"
    return 1
  fi
  out="$("$@" 2>&1)"
  version="$(grep -oE '[0-9]+\.[0-9]+(\.[0-9]+)?' <<<"$out" | head -n 1)"
  if [ -z "$version" ]; then
    problem "$name: no version in the output of \`$*\`: $out"
    return 1
  fi
  if ! version_at_least "$version" "$minimum"; then
    problem "$name $version: needs $minimum or newer ($why)"
    return 1
  fi
  echo "ok: $name $version"
}

tool kind 0.24.0 "its default node image is Kubernetes 1.31, the oldest this project supports" \
  kind version
tool kubectl 1.30.0 "within one minor version of the cluster, Kubernetes 1.31 or newer" \
  kubectl version --client
tool helm 3.18.1 "Helm 3.18.0 renders the integer 0 as true; Helm 4 is the reference" \
  helm version --short
tool skaffold 2.19.0 "skaffold.yaml is skaffold/v4beta14" skaffold version
if tool docker 23.0.0 "skaffold builds with BuildKit: docker build --load, as buildx does" \
  docker version --format '{{.Client.Version}}'; then
  tool "docker buildx" 0.10.0 "--provenance=false and --sbom=false (skaffold.yaml cliFlags)" \
    docker buildx version
  if ! engine="$(docker version --format '{{.Server.Version}}' 2>&1)"; then
    problem "docker: the engine does not answer (kind runs its node in it): $engine"
  fi
fi

images=()
while read -r line; do
  line="${line%%#*}"
  line="${line//[[:space:]]/}"
  [ -n "$line" ] && images+=("$line")
done <"$images_file"
if command -v crane >/dev/null 2>&1; then
  registry=(crane digest)
elif command -v skopeo >/dev/null 2>&1; then
  registry=(skopeo inspect --raw)
elif command -v docker >/dev/null 2>&1; then
  registry=(docker manifest inspect)
else
  problem "images: none of the ${#images[@]} checked (neither crane, skopeo nor docker is installed)"
  images=()
fi
# at most 30 s for each question to a registry (where coreutils' timeout exists)
limited() { if command -v timeout >/dev/null 2>&1; then timeout 30 "$@"; else "$@"; fi; }
# each image asked at once, in the background; a result file per image
results="$(mktemp -d)"
trap 'rm -rf "$results"' EXIT
i=0
for image in ${images[@]+"${images[@]}"}; do
  i=$((i + 1))
  (
    ref="$image"
    [ "${registry[0]}" = skopeo ] && ref="docker://$image"
    if limited "${registry[@]}" "$ref" >/dev/null 2>&1; then
      echo "ok: $image" >"$results/$i"
    elif command -v docker >/dev/null 2>&1 && docker image inspect "$image" >/dev/null 2>&1; then
      echo "ok: $image (in the local Docker only: kind load docker-image $image)" >"$results/$i"
    else
      echo "image $image: not found by \`${registry[*]}\` nor in the local Docker" >"$results/$i"
    fi
  ) &
done
wait
for ((n = 1; n <= i; n++)); do
  result="$(cat "$results/$n")"
  case "$result" in
    ok:*) echo "$result" ;;
    *) problem "$result" ;;
  esac
done

elapsed=$((SECONDS - started))
if [ ${#problems[@]} -gt 0 ]; then
  echo "k8s-preflight: ${#problems[@]} problem(s), in ${elapsed} s:"
  for p in "${problems[@]}"; do echo "  - $p"; done
  exit 1
fi
echo "k8s-preflight: tools and ${#images[@]} images ok, in ${elapsed} s"
