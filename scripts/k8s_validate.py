"""Validate Kubernetes objects with kubernetes-validate, many at once (one process).

Run with the Python of kubernetes-validate's own environment (scripts/k8s-tools.sh):

    .tools/kubernetes-validate/bin/python scripts/k8s_validate.py 1.31.0 1.37.0 < objects.json

stdin: a JSON list of objects; stdout: a JSON list of [index, version, error] for every
object and version that failed strict validation. Custom resources (no schema here) are
listed with the error "no schema" for the caller to check elsewhere.
"""

import json
import sys

import kubernetes_validate


def main() -> None:
    versions = sys.argv[1:]
    objects = json.load(sys.stdin)
    failures = []
    for index, obj in enumerate(objects):
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                failures.append([index, version, "no schema"])
            except kubernetes_validate.ValidationError as e:
                where = ".".join(str(p) for p in e.path) or "(root)"
                failures.append([index, version, f"{where}: {e.message}"])
    json.dump(failures, sys.stdout)


if __name__ == "__main__":
    main()
