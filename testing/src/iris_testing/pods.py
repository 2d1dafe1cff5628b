"""Kubernetes containers run with Docker, as the manifests say: a container of a rendered pod
spec (a Deployment's, a Job's, a Pod's, or the Job Prefect's Kubernetes worker makes for a flow
run) becomes an `iris_testing.containers.Container` whose `docker run` flags mean the same.

| pod spec | docker run |
|---|---|
| image, imagePullPolicy | the image, `--pull` (IfNotPresent is Docker's own `missing`) |
| command, args | `--entrypoint` (then the rest of command), the CMD (as Kubernetes: a command drops the image's CMD) |
| env: value, valueFrom secretKeyRef / configMapKeyRef | `--env`, from the rendered Secrets and ConfigMaps or the ones `Cluster.secrets` gives |
| enableServiceLinks (default true), the API server's Service | the variables the kubelet adds (`MLFLOW_SERVICE_HOST`, `MLFLOW_PORT`, ...), made-up cluster IPs |
| runAsUser, runAsGroup; fsGroup, supplementalGroups | `--user uid:gid`; `--group-add` |
| runAsNonRoot | refused when the user is 0 |
| readOnlyRootFilesystem | `--read-only` |
| capabilities drop [ALL] | `--cap-drop ALL` |
| allowPrivilegeEscalation false | `--security-opt no-new-privileges` |
| seccompProfile RuntimeDefault | Docker's default profile |
| resources.limits cpu, memory | `--cpus`, `--memory` (no swap) |
| workingDir | `--workdir` |
| emptyDir mounted by one container | `--tmpfs` at its mountPath, `size` its sizeLimit, exec allowed |
| emptyDir mounted by several (init) containers | one fresh host folder (mode 0777, as an emptyDir) they share |
| configMap, secret volume | a host folder with a file per key, read-only |
| any other volume | the host folder `Cluster.folders` names for it |
| httpGet startup, liveness, readiness probes | `Probe`: asked from this machine as the kubelet asks |

Fields that only place, restart or account for a pod have no flag and are listed with the
reason (`resources.requests`, `restartPolicy`, ...). Any other field, or a value of these
fields that Docker cannot mean the same with (a capability added, a probe that runs a command,
`$(VAR)` references, a service account token mounted), raises `Untranslatable`: a new field
in a manifest fails the translation instead of being dropped.

Addresses: the manifests are taken as rendered for the cluster, and every address in a
container's environment, command and arguments goes through an explicit map from in-cluster
`host:port` to this machine's (`Cluster.addresses`; `service_addresses` gives every DNS name
of a Service); a URL left naming any host but loopback raises. The containers run on the host's
network (`--network host`), so a container's own port is a port of this machine: a chart
value picks a free one (charts/iris: `api.port`). The Service variables of service links keep
their made-up cluster IPs: they are the kubelet's, and nothing routes them here.
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

import httpx

from iris_testing.containers import Container, Docker, DockerError, Mount
from iris_testing.k8s import Obj, kind_name, pod_spec

#: Hosts a container on the host's network reaches this machine by.
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
#: The port a URL of these schemes means when it names none.
DEFAULT_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "postgres": 5432}
#: The Service every pod gets the variables of, whatever enableServiceLinks says.
API_SERVER_SERVICE: Obj = {
    "kind": "Service",
    "metadata": {"name": "kubernetes", "namespace": "default"},
    "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443}]},
}
#: Pod spec fields with no `docker run` flag, and why none is needed.
POD_FIELDS_WITHOUT_FLAG = {
    "restartPolicy": "Docker runs each container once; restarting one is the kubelet's",
    "serviceAccountName": "the pod's identity towards the API server, whose token is not mounted",
    "completions": "a Job field Prefect's worker needs in the pod template; the API server drops it",
    "parallelism": "a Job field Prefect's worker needs in the pod template; the API server drops it",
}

_VAR_REFERENCE = re.compile(r"(?<!\$)\$\([A-Za-z_][A-Za-z0-9_]*\)")
_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<userinfo>[^/\s?#@]*@)?"
    r"(?P<host>\[[^\]/\s]*\]|[^/\s:?#@\[\]]+)(?::(?P<port>\d+))?"
)
_SUFFIXES: dict[str, Decimal] = {
    "m": Decimal("0.001"), "": Decimal(1), "k": Decimal(10**3), "M": Decimal(10**6),
    "G": Decimal(10**9), "T": Decimal(10**12), "Ki": Decimal(2**10), "Mi": Decimal(2**20),
    "Gi": Decimal(2**30), "Ti": Decimal(2**40),
}  # fmt: skip


class Untranslatable(ValueError):
    """A manifest field, or a value of one, that `docker run` cannot mean the same with here."""


def _check_keys(obj: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    unknown = sorted(set(obj) - set(known))
    if unknown:
        raise Untranslatable(f"{where}: no translation for {', '.join(unknown)}")


def quantity(value: str | float, where: str) -> Decimal:
    """A Kubernetes quantity ("384Mi", "1Gi", "500m", 2) as a number."""
    text = str(value)
    found = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)", text)
    if not found:
        raise Untranslatable(f"{where}: {text!r} is not a quantity")
    if found[2] not in _SUFFIXES:
        raise Untranslatable(f"{where}: unknown quantity suffix in {text!r}")
    return Decimal(found[1]) * _SUFFIXES[found[2]]


def env_name(name: str) -> str:
    """A Service's name as the kubelet spells it in variable names."""
    return name.upper().replace("-", "_")


def service_links(services: Iterable[Obj]) -> dict[str, str]:
    """The variables the kubelet gives a pod for these Services (its namespace's, with
    enableServiceLinks), in its order; a Service without a cluster IP (rendered ones have
    none yet) gets a made-up one, 10.96.0.10 and up. Headless Services get none."""
    env: dict[str, str] = {}
    for index, service in enumerate(services):
        spec = service.get("spec") or {}
        if spec.get("type") == "ExternalName" or spec.get("clusterIP") == "None":
            continue
        ip = spec.get("clusterIP") or f"10.96.0.{10 + index}"
        prefix, ports = env_name(service["metadata"]["name"]), spec.get("ports") or []
        if not ports:
            continue
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        for port in ports:
            if port.get("name"):
                env[f"{prefix}_SERVICE_PORT_{env_name(port['name'])}"] = str(port["port"])
        for i, port in enumerate(ports):
            protocol = str(port.get("protocol") or "TCP")
            address = f"{protocol.lower()}://{ip}:{port['port']}"
            if i == 0:
                env[f"{prefix}_PORT"] = address
            name = f"{prefix}_PORT_{port['port']}_{protocol.upper()}"
            env[name] = address
            env[f"{name}_PROTO"] = protocol.lower()
            env[f"{name}_PORT"] = str(port["port"])
            env[f"{name}_ADDR"] = ip
    return env


def service_addresses(name: str, namespace: str, port: int, here: str) -> dict[str, str]:
    """Every `host:port` by which a pod reaches Service `name` of `namespace` at `port`
    (its DNS names), mapped to `here` ("127.0.0.1:PORT")."""
    hosts = [name, f"{name}.{namespace}", f"{name}.{namespace}.svc",
             f"{name}.{namespace}.svc.cluster.local"]  # fmt: skip
    return {f"{host}:{port}": here for host in hosts}


@dataclass(frozen=True)
class Cluster:
    """What a pod finds around it in the cluster, stood in for on this machine."""

    #: Rendered objects: the Secrets and ConfigMaps that env and volumes refer to.
    objects: Sequence[Obj] = ()
    #: Secrets made outside these objects (by another release, by a user): name -> key -> value.
    secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: In-cluster `host:port` -> this machine's (see `service_addresses`).
    addresses: Mapping[str, str] = field(default_factory=dict)
    #: The Services of the pods' namespace, for service links; None: a pod with
    #: enableServiceLinks (the default) is refused.
    services: Sequence[Obj] | None = None
    #: Volume name -> host folder, for volumes that are not emptyDir, configMap or secret.
    folders: Mapping[str, Path] = field(default_factory=dict)

    def _object(self, kind: str, name: str) -> Obj | None:
        found = [o for o in self.objects if o.get("kind") == kind and
                 o["metadata"]["name"] == name]  # fmt: skip
        return found[0] if found else None

    def secret(self, name: str) -> dict[str, str] | None:
        """A Secret's keys and (decoded) values."""
        if name in self.secrets:
            return dict(self.secrets[name])
        secret = self._object("Secret", name)
        if secret is None:
            return None
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        return data | dict(secret.get("stringData") or {})

    def config_map(self, name: str) -> dict[str, str] | None:
        config_map = self._object("ConfigMap", name)
        if config_map is None:
            return None
        if config_map.get("binaryData"):
            raise Untranslatable(f"ConfigMap/{name}: binaryData is not translated")
        return dict(config_map.get("data") or {})

    def rewrite(self, text: str, where: str) -> str:
        """`text` with every URL's in-cluster `host:port` replaced by this machine's; a URL
        naming a host neither mapped nor loopback raises (its password is never shown)."""

        def here(url: re.Match[str]) -> str:
            host, scheme = url["host"], url["scheme"].lower()
            port = url["port"] or DEFAULT_PORTS.get(scheme)
            mapped = self.addresses.get(f"{host}:{port}")
            if mapped is not None:
                return f"{url['scheme']}://{url['userinfo'] or ''}{mapped}"
            if host.strip("[]") in LOOPBACK:
                return url[0]
            raise Untranslatable(
                f"{where}: {scheme}://{host}:{port} is neither in the address map nor this "
                "machine (the container runs on the host's network)"
            )

        return _URL.sub(here, text)


@dataclass(frozen=True)
class Probe:
    """An httpGet probe, asked from this machine (the container is on its network)."""

    path: str
    port: int
    scheme: str = "HTTP"
    period_s: float = 10
    timeout_s: float = 1
    failure_threshold: int = 3
    success_threshold: int = 1
    initial_delay_s: float = 0

    @property
    def url(self) -> str:
        return f"{self.scheme.lower()}://127.0.0.1:{self.port}{self.path}"

    def check(self) -> bool:
        """One probe as the kubelet counts it: a status from 200 to 399 within timeoutSeconds."""
        try:
            status = httpx.get(self.url, timeout=self.timeout_s).status_code
        except httpx.HTTPError:
            return False
        return 200 <= status < 400


@dataclass(frozen=True)
class PodContainer:
    """One container of a pod: what `docker run` starts, and its probes by kind (`startup`,
    `liveness`, `readiness`; those the manifest declares)."""

    name: str
    container: Container
    probes: Mapping[str, Probe] = field(default_factory=dict)


@dataclass(frozen=True)
class Pod:
    """A pod's containers, init containers first (they run in order, each to its end)."""

    init_containers: tuple[PodContainer, ...]
    containers: tuple[PodContainer, ...]

    def container(self, name: str | None = None) -> PodContainer:
        """The pod's container `name` (default: its only one)."""
        found = [c for c in self.containers if name is None or c.name == name]
        if len(found) != 1:
            raise LookupError(f"{len(found)} containers named {name!r}")
        return found[0]


@dataclass(frozen=True)
class _Volume:
    source: Path | None = None  # a host folder
    tmpfs: str | None = None  # tmpfs options
    read_only: bool = False  # whatever the mount says


def _empty_dir(source: Obj, name: str, users: int, folder: Path, where: str) -> _Volume:
    _check_keys(source, {"sizeLimit", "medium"}, f"{where} emptyDir")
    if source.get("medium", "") not in {"", "Memory"}:
        raise Untranslatable(f"{where}: emptyDir medium {source['medium']!r}")
    if users > 1:  # init containers hand files on through it: one folder they share
        shared = folder / f"volume-{name}"
        shared.mkdir(parents=True)
        shared.chmod(0o777)  # as the kubelet makes an emptyDir
        return _Volume(source=shared)
    options = ["exec"]
    if "sizeLimit" in source:
        options.append(f"size={int(quantity(source['sizeLimit'], where))}")
    return _Volume(tmpfs=",".join(options))


def _files(data: Mapping[str, str], name: str, folder: Path) -> _Volume:
    """A configMap or secret volume: a file per key, read-only."""
    files = folder / f"volume-{name}"
    files.mkdir(parents=True)
    files.chmod(0o755)
    for file, text in data.items():
        (files / file).write_text(text)
        (files / file).chmod(0o644)  # the kubelet's defaultMode
    return _Volume(source=files, read_only=True)


def _volumes(spec: Obj, cluster: Cluster, folder: Path, where: str) -> dict[str, _Volume]:
    users: dict[str, int] = {}
    for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
        for mount in container.get("volumeMounts") or []:
            users[mount["name"]] = users.get(mount["name"], 0) + 1
    out = {}
    for volume in spec.get("volumes") or []:
        name, here = volume["name"], f"{where} volume {volume['name']}"
        sources = sorted(set(volume) - {"name"})
        if len(sources) != 1:
            raise Untranslatable(f"{here}: {sources}")
        kind, source = sources[0], volume[sources[0]] or {}
        if kind == "emptyDir":
            out[name] = _empty_dir(source, name, users.get(name, 0), folder, here)
        elif kind in {"configMap", "secret"}:
            key = "name" if kind == "configMap" else "secretName"
            _check_keys(source, {key}, f"{here} {kind}")
            data = (cluster.config_map if kind == "configMap" else cluster.secret)(source[key])
            if data is None:
                raise Untranslatable(f"{here}: no {kind} {source[key]!r} rendered or given")
            out[name] = _files(data, name, folder)
        elif name in cluster.folders:
            out[name] = _Volume(source=cluster.folders[name])
        else:
            raise Untranslatable(f"{here}: a {kind} volume; give a host folder for it")
    return out


def _env(container: Obj, spec: Obj, cluster: Cluster, where: str) -> dict[str, str]:
    env: dict[str, str] = {}
    if spec.get("enableServiceLinks", True):
        if cluster.services is None:
            raise Untranslatable(f"{where}: enableServiceLinks needs the namespace's Services")
        env |= service_links(cluster.services)
    env |= service_links([API_SERVER_SERVICE])
    for item in container.get("env") or []:
        name, here = item["name"], f"{where} env {item['name']}"
        _check_keys(item, {"name", "value", "valueFrom"}, here)
        if "valueFrom" not in item:
            value = str(item.get("value", ""))
            if _VAR_REFERENCE.search(value):
                raise Untranslatable(f"{here}: $(VAR) references are not translated")
            env[name] = cluster.rewrite(value, here)
            continue
        source = item["valueFrom"]
        _check_keys(source, {"secretKeyRef", "configMapKeyRef"}, here)
        ((kind, ref),) = source.items()
        _check_keys(ref, {"name", "key", "optional"}, here)
        data = (cluster.secret if kind == "secretKeyRef" else cluster.config_map)(ref["name"])
        if data is None or ref["key"] not in data:
            if ref.get("optional"):
                continue
            raise Untranslatable(f"{here}: no {kind} {ref['name']}/{ref['key']} rendered or given")
        env[name] = cluster.rewrite(data[ref["key"]], here)
    return env


def _security(container: Obj, spec: Obj, where: str) -> dict[str, Any]:
    pod = spec.get("securityContext") or {}
    own = container.get("securityContext") or {}
    _check_keys(pod, {"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup",
                      "supplementalGroups", "seccompProfile"}, f"{where} pod securityContext")  # fmt: skip
    _check_keys(own, {"runAsNonRoot", "runAsUser", "runAsGroup", "allowPrivilegeEscalation",
                      "readOnlyRootFilesystem", "capabilities", "privileged", "seccompProfile"},
                f"{where} securityContext")  # fmt: skip

    def setting(key: str) -> Any:
        return own.get(key, pod.get(key))

    user, group = setting("runAsUser"), setting("runAsGroup")
    if not isinstance(user, int) or not isinstance(group, int):
        raise Untranslatable(
            f"{where}: runAsUser and runAsGroup must be set (the image's would apply)"
        )
    if setting("runAsNonRoot") and user == 0:
        raise Untranslatable(f"{where}: runAsNonRoot with user 0 would not start")
    if setting("seccompProfile") != {"type": "RuntimeDefault"}:
        raise Untranslatable(
            f"{where}: seccompProfile {setting('seccompProfile')!r} (only RuntimeDefault)"
        )
    if own.get("privileged"):
        raise Untranslatable(f"{where}: privileged")
    capabilities = own.get("capabilities") or {}
    _check_keys(capabilities, {"drop", "add"}, f"{where} capabilities")
    if capabilities.get("add") or capabilities.get("drop", ["ALL"]) not in (["ALL"], []):
        raise Untranslatable(f"{where}: capabilities {capabilities} (only drop [ALL])")
    groups = [*(pod.get("supplementalGroups") or [])]
    if "fsGroup" in pod:
        groups.append(pod["fsGroup"])
    return {
        "user": user,
        "group": group,
        "groups": tuple(groups),
        "read_only_root": bool(own.get("readOnlyRootFilesystem", False)),
        "drop_all_capabilities": capabilities.get("drop") == ["ALL"],
        "no_new_privileges": own.get("allowPrivilegeEscalation") is False,
    }


def _resources(container: Obj, where: str) -> dict[str, Any]:
    resources = container.get("resources") or {}
    _check_keys(resources, {"limits", "requests"}, f"{where} resources")
    for kind in ("limits", "requests"):  # requests only place the pod
        _check_keys(resources.get(kind) or {}, {"cpu", "memory"}, f"{where} resources.{kind}")
    limits = resources.get("limits") or {}
    return {
        "memory": int(quantity(limits["memory"], where)) if "memory" in limits else None,
        "cpus": float(quantity(limits["cpu"], where)) if "cpu" in limits else None,
    }


def _pull(container: Obj, where: str) -> str:
    image = container["image"]
    untagged = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
    policy = container.get("imagePullPolicy", "Always" if untagged else "IfNotPresent")
    pulls = {"IfNotPresent": "missing", "Never": "never", "Always": "always"}
    if policy not in pulls:
        raise Untranslatable(f"{where}: imagePullPolicy {policy!r}")
    return pulls[policy]


def _probes(container: Obj, where: str) -> dict[str, Probe]:
    ports = {}
    for port in container.get("ports") or []:
        _check_keys(port, {"name", "containerPort", "protocol"}, f"{where} ports")
        if port.get("protocol", "TCP") != "TCP":
            raise Untranslatable(f"{where}: port protocol {port['protocol']}")
        ports[port.get("name") or str(port["containerPort"])] = int(port["containerPort"])
    probes = {}
    for kind in ("startup", "liveness", "readiness"):
        declared = container.get(f"{kind}Probe")
        if declared is None:
            continue
        here = f"{where} {kind}Probe"
        _check_keys(declared, {"httpGet", "periodSeconds", "timeoutSeconds", "failureThreshold",
                               "successThreshold", "initialDelaySeconds"}, here)  # fmt: skip
        if "httpGet" not in declared:
            raise Untranslatable(f"{here}: only httpGet probes are translated")
        get = declared["httpGet"]
        _check_keys(get, {"path", "port", "scheme"}, here)
        port = get["port"]
        if isinstance(port, str):
            if port not in ports:
                raise Untranslatable(f"{here}: no container port named {port!r}")
            port = ports[port]
        probes[kind] = Probe(
            path=get.get("path", "/"),
            port=int(port),
            scheme=get.get("scheme", "HTTP"),
            period_s=declared.get("periodSeconds", 10),
            timeout_s=declared.get("timeoutSeconds", 1),
            failure_threshold=declared.get("failureThreshold", 3),
            success_threshold=declared.get("successThreshold", 1),
            initial_delay_s=declared.get("initialDelaySeconds", 0),
        )
    return probes


#: Container fields the translation knows.
CONTAINER_FIELDS = frozenset({
    "name", "image", "imagePullPolicy", "command", "args", "env", "workingDir", "ports",
    "startupProbe", "livenessProbe", "readinessProbe", "resources", "securityContext",
    "volumeMounts",
})  # fmt: skip


def translate_container(
    container: Obj, spec: Obj, cluster: Cluster, volumes: Mapping[str, _Volume], where: str
) -> PodContainer:
    """One container of pod spec `spec`, its volumes already made (`translate` does that)."""
    where = f"{where} container {container['name']}"
    _check_keys(container, CONTAINER_FIELDS, where)
    words = [*(container.get("command") or []), *(container.get("args") or [])]
    if any(_VAR_REFERENCE.search(word) for word in words):
        raise Untranslatable(f"{where}: $(VAR) references are not translated")
    tmpfs, mounts = [], []
    for mount in container.get("volumeMounts") or []:
        _check_keys(mount, {"name", "mountPath", "readOnly"}, f"{where} volumeMounts")
        if mount["name"] not in volumes:
            raise Untranslatable(f"{where}: no volume {mount['name']!r}")
        volume = volumes[mount["name"]]
        if volume.tmpfs is not None:
            tmpfs.append(f"{mount['mountPath']}:{volume.tmpfs}")
        else:
            read_only = volume.read_only or bool(mount.get("readOnly"))
            mounts.append(Mount(volume.source, mount["mountPath"], read_only))  # type: ignore[arg-type]

    def rewritten(words: Sequence[str], what: str) -> tuple[str, ...]:
        return tuple(cluster.rewrite(str(w), f"{where} {what}") for w in words)

    return PodContainer(
        name=container["name"],
        container=Container(
            container["image"],
            command=rewritten(container.get("command") or [], "command"),
            args=rewritten(container.get("args") or [], "args"),
            env=_env(container, spec, cluster, where),
            mounts=mounts,
            tmpfs=tmpfs,
            workdir=container.get("workingDir"),
            pull=_pull(container, where),
            **_security(container, spec, where),
            **_resources(container, where),
        ),
        probes=_probes(container, where),
    )


#: Pod spec fields the translation knows.
POD_FIELDS = frozenset({
    "containers", "initContainers", "volumes", "securityContext",
    "automountServiceAccountToken", "enableServiceLinks", *POD_FIELDS_WITHOUT_FLAG,
})  # fmt: skip


def translate(workload: Obj, cluster: Cluster, folder: Path) -> Pod:
    """The pod of a workload (Deployment, Job, Pod, ...) as Docker containers; the host
    folders of its volumes are made under `folder` (the caller removes it)."""
    where = kind_name(workload)
    spec = pod_spec(workload)
    if spec is None:
        raise Untranslatable(f"{where}: no pod spec")
    _check_keys(spec, POD_FIELDS, f"{where} pod spec")
    if spec.get("automountServiceAccountToken", True) is not False:
        raise Untranslatable(f"{where}: a service account token would be mounted; none here")
    volumes = _volumes(spec, cluster, folder, where)

    def each(key: str) -> tuple[PodContainer, ...]:
        return tuple(translate_container(c, spec, cluster, volumes, where)
                     for c in spec.get(key) or [])  # fmt: skip

    return Pod(each("initContainers"), each("containers"))


@dataclass(frozen=True)
class Ran:
    """A container run to its end: its Docker name, exit code, output and what it wrote to its
    root filesystem (`docker diff` less the mount points, `own_writes`)."""

    name: str
    code: int
    logs: str
    diff: list[str]


def own_writes(diff: Sequence[str], container: Container) -> list[str]:
    """`docker diff` of a container less what the runtime made for its volumes: a mount point
    the image lacks (`A /etc/iris`) and the folders above it (made, `A`, or changed, `C /etc`),
    as a kubelet's runtime makes them too. A file written anywhere still shows (`A /etc/x`)."""
    points = [m.path for m in container.mounts] + [t.split(":")[0] for t in container.tmpfs]
    made = {f"A {p}" for p in points}
    made |= {f"{change} {parent}" for p in points for parent in PurePosixPath(p).parents
             for change in "AC"}  # fmt: skip
    return [line for line in diff if line not in made]


def run_pod(docker: Docker, pod: Pod, name: str, timeout_s: float) -> list[Ran]:
    """Run a Job's pod to its end as the kubelet does once (no retry): the init containers in
    order, each to its end, then the containers at once; a failed init container ends the pod
    there. Each container is named `<name>-<its name>` and removed afterwards."""
    ran: list[Ran] = []
    started: list[str] = []

    def finished(c: PodContainer, docker_name: str, code: int) -> Ran:
        diff = own_writes(docker.diff(docker_name), c.container)
        ran.append(Ran(docker_name, code, docker.logs(docker_name), diff))
        return ran[-1]

    try:
        for init in pod.init_containers:
            started.append(f"{name}-{init.name}")
            code, _ = docker.run(init.container, started[-1], timeout_s)
            if finished(init, started[-1], code).code != 0:
                return ran
        for c in pod.containers:
            started.append(f"{name}-{c.name}")
            docker.start(c.container, started[-1])
        for c in pod.containers:
            code = int(docker("wait", f"{name}-{c.name}", timeout_s=timeout_s).strip())
            finished(c, f"{name}-{c.name}", code)
    finally:
        with contextlib.suppress(DockerError):  # one that never started; the session's
            docker.remove(*started)  # label finds whatever is left
    return ran
