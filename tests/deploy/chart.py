#!/usr/bin/env python3
"""Lints and renders the Helm chart with Helm's own engine, and validates every object.

    chart.py CHART_DIR

For each value set CHART_DIR/ci/<name>-values.yaml: `helm lint --strict` for Kubernetes
1.30, a render as release `shoal` in namespace `shoal-system`, and a strict, offline check of
every rendered object against the Kubernetes 1.30 schemas. Value sets that must be refused
(below) are checked to be refused.

The generated Secrets are read back with Helm's `lookup` on upgrade. A render without a
cluster has no `lookup` (it finds nothing), so each value set is rendered twice more with
Helm's cluster-aware render against a stand-in Kubernetes API on 127.0.0.1 (port 0) that
answers discovery and Secret GETs: once holding the Secrets of the first render (an upgrade:
the same values must come back) and once empty (a fresh install: new values).

Prints one JSON document on stdout for the Rust tests (tests/tests/deploy/), which check
what crosses objects and run the real binaries:

    {"sets": {"<name>": {"release", "namespace", "objects": [...], "notes": "...",
                         "values": {the merged values},
                         "upgrade_secrets": [...], "fresh_secrets": [...]}},
     "refused": {"<case>": "<helm's message>"}}

Every Secret object carries its data decoded under "__decoded".

Exits 1 naming every problem; exits 2 when a Python package it needs is missing. It never
skips: a missing package is a failure.
"""

from __future__ import annotations

import base64
import re
import http.server
import json
import pathlib
import sys
import threading

KUBE_VERSION = "1.30.0"
RELEASE = "shoal"
NAMESPACE = "shoal-system"
# Kinds that come from CRDs: kubernetes-validate has no schema for them, so they are checked
# here by hand (check_custom) instead.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
}

# Values the chart must refuse, each with the reason a user would make the mistake.
MUST_REFUSE = {
    "managed key in origin.config": {"origin": {"config": {"listen": "0.0.0.0:1"}}},
    "managed nested key in origin.config": {"origin": {"config": {"cluster": {"members": []}}}},
    "managed key in agent.config": {"agent": {"config": {"tracker": "http://x:1"}}},
    "misspelt top-level key": {"orgin": {"replicas": 3}},
    "misspelt part key": {"tracker": {"replica": 2}},
    "no origins": {"origin": {"replicas": 0}},
    "port out of range": {"agent": {"registryPort": 70000}},
    "registry with a path": {"agent": {"containerd": {"registries": ["docker.io/library"]}}},
    "log format": {"log": {"format": "xml"}},
    "credentials in tracker.config": {"tracker": {"config": {"credentials": {"read_token": "x" * 32}}}},
    "credentials in agent.config": {"agent": {"config": {"credentials": {"metainfo_keys": ""}}}},
    "insecure in origin.config": {"origin": {"config": {"insecure": True}}},
    "insecure in agent.config": {"agent": {"config": {"insecure": True}}},
    "node CIDR without a prefix length": {"networkPolicy": {"nodeCIDRs": ["10.0.0.1"]}},
    "tls in origin.config": {"origin": {"config": {"tls": {"plaintext": True}}}},
    "tls in agent.config": {"agent": {"config": {"tls": {"name": "node-1"}}}},
    "cert-manager without an issuer": {"tls": {"certManager": {"enabled": True}}},
    "cert-manager issuer of an unknown kind": {
        "tls": {"certManager": {"enabled": True, "issuerRef": {"name": "x", "kind": "Vault"}}}},
}


def missing(package: str, module: str, error: Exception) -> None:
    print(
        f"chart.py: the Python package {package!r} (import {module}) is missing or broken: "
        f"{error}\nInstall it with tests/install-deps.sh (or: python3 -m pip install {package}).",
        file=sys.stderr,
    )
    sys.exit(2)


try:
    import helm_python as helm
except Exception as e:  # noqa: BLE001 - any failure to load is the same failure to the user
    missing("helm-python-sdk", "helm_python", e)
try:
    import kubernetes_validate
    from kubernetes_validate import utils as kv_utils
except Exception as e:  # noqa: BLE001
    missing("kubernetes-validate", "kubernetes_validate", e)
try:
    import yaml
except Exception as e:  # noqa: BLE001
    missing("PyYAML", "yaml", e)


def check_custom(obj: dict, where: str, problems: list[str]) -> None:
    """The fields of the CRD kinds the chart renders that their operators need, with their
    types (kubernetes-validate has no schema for them)."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "ServiceMonitor":
        check_service_monitor(spec, where, problems)
    elif kind == "Certificate":
        check_certificate(spec, where, problems)
    elif kind == "Issuer":
        if spec != {"selfSigned": {}}:
            problems.append(f"{where}: the chart's only Issuer is a selfSigned one: {spec}")


def check_service_monitor(spec: dict, where: str, problems: list[str]) -> None:
    labels = ((spec.get("selector") or {}).get("matchLabels")) or {}
    if not labels or not all(isinstance(v, str) for v in labels.values()):
        problems.append(f"{where}: spec.selector.matchLabels must be a non-empty string map")
    endpoints = spec.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        problems.append(f"{where}: spec.endpoints must be a non-empty list")
        return
    for ep in endpoints:
        unknown = set(ep) - {"port", "path", "interval", "scrapeTimeout", "scheme", "tlsConfig"}
        if unknown:
            problems.append(f"{where}: unexpected endpoint fields {sorted(unknown)}")
        if not isinstance(ep.get("port"), str):
            problems.append(f"{where}: endpoint port must be a port name")
        if ep.get("scheme", "http") not in ("http", "https"):
            problems.append(f"{where}: endpoint scheme {ep.get('scheme')!r}")
        tls = ep.get("tlsConfig")
        if tls is not None:
            secret = ((tls.get("ca") or {}).get("secret")) or {}
            if (set(tls) - {"serverName", "ca"} or not isinstance(tls.get("serverName"), str)
                    or set(secret) != {"name", "key"}
                    or not all(isinstance(v, str) for v in secret.values())):
                problems.append(f"{where}: tlsConfig must be serverName and ca.secret.{{name,key}}: {tls}")


CERTIFICATE_FIELDS = {"secretName", "commonName", "dnsNames", "duration", "renewBefore",
                      "privateKey", "usages", "issuerRef", "isCA"}
# cert-manager's KeyUsage enumeration (the names the chart uses among them).
USAGES = {"signing", "digital signature", "content commitment", "key encipherment",
          "key agreement", "data encipherment", "cert sign", "crl sign", "encipher only",
          "decipher only", "any", "server auth", "client auth", "code signing",
          "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user",
          "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"}


def check_certificate(spec: dict, where: str, problems: list[str]) -> None:
    unknown = set(spec) - CERTIFICATE_FIELDS
    if unknown:
        problems.append(f"{where}: unexpected Certificate fields {sorted(unknown)}")
    if not isinstance(spec.get("secretName"), str) or not spec.get("secretName"):
        problems.append(f"{where}: spec.secretName must be a name")
    ref = spec.get("issuerRef") or {}
    if (not isinstance(ref.get("name"), str) or not ref.get("name")
            or ref.get("kind") not in ("Issuer", "ClusterIssuer") or set(ref) - {"name", "kind", "group"}):
        problems.append(f"{where}: spec.issuerRef must name an Issuer or ClusterIssuer: {ref}")
    names = spec.get("dnsNames", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        problems.append(f"{where}: spec.dnsNames must be a list of names")
    if not spec.get("isCA") and not names:
        problems.append(f"{where}: a certificate that is no CA must name something")
    if not isinstance(spec.get("isCA", False), bool):
        problems.append(f"{where}: spec.isCA must be a boolean")
    for k in ("duration", "renewBefore"):
        v = spec.get(k)
        if v is not None and not (isinstance(v, str) and re.fullmatch(r"([0-9]+(\.[0-9]+)?(h|m|s))+", v)):
            problems.append(f"{where}: spec.{k} {v!r} is not a Go duration")
    usages = spec.get("usages", [])
    if not isinstance(usages, list) or set(usages) - USAGES:
        problems.append(f"{where}: unknown usages {usages}")
    key = spec.get("privateKey") or {}
    if (set(key) - {"algorithm", "size", "encoding", "rotationPolicy"}
            or key.get("algorithm", "RSA") not in ("RSA", "ECDSA", "Ed25519")
            or key.get("encoding", "PKCS1") not in ("PKCS1", "PKCS8")
            or key.get("rotationPolicy", "Never") not in ("Never", "Always")
            or not isinstance(key.get("size", 256), int)):
        problems.append(f"{where}: spec.privateKey {key}")


class FakeApiServer:
    """The part of the Kubernetes API that Helm's `lookup` of a Secret uses: discovery of
    the core group and GET of one Secret (404 NotFound when it has none), on 127.0.0.1."""

    def __init__(self):
        self.secrets: dict[tuple[str, str], dict] = {}
        self.requests: list[str] = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the name http.server calls
                path = self.path.split("?")[0]
                api.requests.append(path)
                parts = path.strip("/").split("/")
                if path == "/api":
                    return self.send(200, {"kind": "APIVersions", "versions": ["v1"]})
                if path == "/apis":
                    return self.send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
                if path == "/api/v1":
                    return self.send(200, {
                        "kind": "APIResourceList", "groupVersion": "v1",
                        "resources": [{"name": "secrets", "singularName": "secret", "namespaced": True,
                                       "kind": "Secret", "verbs": ["get", "list"]}],
                    })
                if len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "secrets":
                    found = api.secrets.get((parts[3], parts[5]))
                    if found is not None:
                        return self.send(200, found)
                self.send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                "reason": "NotFound", "code": 404, "message": f"{path} not found"})

            def send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # quiet: stdout is the JSON document
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self) -> str:
        port = self.server.server_address[1]
        return json.dumps({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "stand-in", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
            "users": [{"name": "stand-in", "user": {"token": "stand-in"}}],
            "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "stand-in",
                                                          "namespace": NAMESPACE}}],
            "current-context": "stand-in",
        })


def secrets_of(rendered: dict[str, str]) -> list[dict]:
    """The Secret objects of a render, each with its data decoded under "__decoded"."""
    out = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc and doc.get("kind") == "Secret":
                decode(doc)
                out.append(doc)
    return out


def decode(secret: dict) -> None:
    secret["__decoded"] = {
        k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()
    }


def rerender(chart, name: str, values: dict, secrets: list[dict], problems: list[str]):
    """Renders as Helm does against a cluster holding `secrets`: an upgrade when there are
    some, a first install when there are none. Returns the Secrets it renders."""
    with FakeApiServer() as api:
        for s in secrets:
            stored = {k: v for k, v in s.items() if not k.startswith("__")}
            api.secrets[(s["metadata"].get("namespace", NAMESPACE), s["metadata"]["name"])] = stored
        with helm.Config(kubeconfig_content=api.kubeconfig(), namespace=NAMESPACE) as cfg:
            try:
                rendered = cfg.render(chart, values, name=RELEASE, namespace=NAMESPACE,
                                      is_upgrade=bool(secrets), is_install=not secrets)
            except helm.HelmError as e:
                problems.append(f"[{name}] render against the stand-in API failed: {e}")
                return []
        generated = [s for s in secrets_of(rendered)
                     if s["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep"]
        for s in generated:
            if f"/api/v1/namespaces/{NAMESPACE}/secrets/{s['metadata']['name']}" not in api.requests:
                problems.append(f"[{name}] Secret {s['metadata']['name']} was rendered without a lookup")
        return secrets_of(rendered)


def render_set(chart, chart_dir: pathlib.Path, name: str, values: dict, problems: list[str]):
    report = helm.lint(
        str(chart_dir),
        values,
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{KUBE_VERSION}",
    )
    for msg in report.get("messages", []):
        # 1 is info ("icon is recommended"); strict lint fails on warnings (2) and errors (3).
        if msg.get("severity", 0) >= 2:
            problems.append(f"[{name}] helm lint: {msg.get('path')}: {msg.get('error')}".strip())
    for err in report.get("errors", []):
        problems.append(f"[{name}] helm lint: {err}".strip())

    try:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    except helm.HelmError as e:
        problems.append(f"[{name}] render failed: {e}")
        return None

    objects, notes = [], ""
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as e:
            problems.append(f"[{name}] {path} is not YAML: {e}")
            continue
        for doc in docs:
            if doc is None:
                continue
            where = f"[{name}] {path}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
            if (doc.get("apiVersion"), doc.get("kind")) in CUSTOM_KINDS:
                check_custom(doc, where, problems)
            else:
                try:
                    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
                except kv_utils.ValidationError as e:
                    path_in = "/".join(str(p) for p in e.absolute_path)
                    problems.append(f"{where}: at /{path_in}: {e.message}")
                except kv_utils.SchemaNotFoundError as e:
                    problems.append(f"{where}: no Kubernetes {KUBE_VERSION} schema: {e.message}")
                except (kv_utils.InvalidSchemaError, kv_utils.VersionNotSupportedError) as e:
                    problems.append(f"{where}: {e.message}")
            doc["__template"] = path
            if doc.get("kind") == "Secret":
                decode(doc)
            objects.append(doc)
    secrets = [o for o in objects if o.get("kind") == "Secret"]
    return {
        "release": RELEASE,
        "namespace": NAMESPACE,
        "objects": objects,
        "notes": notes,
        "values": chart.merge_values(values),
        "upgrade_secrets": rerender(chart, name, values, secrets, problems),
        "fresh_secrets": rerender(chart, name, values, [], problems),
    }


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    chart_dir = pathlib.Path(sys.argv[1]).resolve()
    problems: list[str] = []
    out: dict = {"sets": {}, "refused": {}}
    value_files = sorted((chart_dir / "ci").glob("*-values.yaml"))
    if not value_files:
        problems.append(f"no value sets in {chart_dir / 'ci'}")
    with helm.Chart.load(str(chart_dir)) as chart:
        for f in value_files:
            name = f.name.removesuffix("-values.yaml")
            values = helm.values_from_yaml(f.read_text()) or {}
            result = render_set(chart, chart_dir, name, values, problems)
            if result is not None:
                out["sets"][name] = result
        for case, values in MUST_REFUSE.items():
            try:
                chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
            except helm.HelmError as e:
                out["refused"][case] = str(e)
            else:
                problems.append(f"values the chart must refuse were accepted: {case}: {values}")
    if problems:
        print(f"{len(problems)} problem(s) with the chart:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
