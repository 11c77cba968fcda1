"""Which Deployments a workload calls, learned from what it already says. Pure.

Nobody keeps a service map up to date, but every workload names what it calls: a
``PAYMENTS_URL=http://payments:8080`` in its pod template, a ``--upstream=payments:9000``
argument, and, when a call fails, the host in its error line (``upstream call failed
host=payments``, ``dial tcp payments:5432: connection refused``). Those names are read here:

- a *host* is a Service name (``payments``), qualified by its namespace (``payments.billing``,
  ``payments.billing.svc``, ``payments.billing.svc.cluster.local``; a StatefulSet pod's
  ``web-0.payments.billing.svc...`` names the Service ``payments``). Hosts are returned in that
  short form, ``<service>`` or ``<service>.<namespace>``, lower case; anything else with dots
  (``api.stripe.com``) is outside the cluster and dropped;
- a host maps to the Deployments whose pod labels hold every pair of the selector of the
  Service of that name (in the workload's own namespace unless the host names another); failing
  that, to a Deployment of that very name (weaker: nothing says its pods answer to it);
- the workload itself is never its own dependency.

Environment values and arguments that look like credentials (``judge.changes.looks_secret_value``:
a URL with a password, a long token) are never read, whatever the variable is called; a value
taken from a ConfigMap or Secret is not in the template at all. Error lines are scanned only for
the host shapes above, so nothing else of them travels into the evidence.

Everything is bounded: lines scanned per workload, characters per line, dependencies per
workload and evidence sentences per dependency.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from ..model import Deployment, LogLine, PodTemplate, Service
from .changes import SECRET_NAME_PATTERN, looks_secret_value

# (namespace, Deployment name)
WorkloadKey = tuple[str, str]
T = TypeVar("T")

MAX_LINES_SCANNED = 1000
MAX_LINE_CHARS = 4000
MAX_DEPENDENCIES = 20
MAX_EVIDENCE = 5
MAX_HOSTS = 64

# A Service name is an RFC 1035 label; a namespace an RFC 1123 one (may start with a digit).
_SERVICE_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# Words that sit where a host would and name none.
_NOT_HOSTS = frozenset({
    "localhost", "unknown", "none", "null", "nil", "undefined", "true", "false", "http", "https",
    "tcp", "udp", "grpc", "unix", "host", "hostname", "service", "upstream", "empty", "n-a",
})

_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})"
_PORT = r"\d{1,5}"
# scheme://[userinfo@]host[:port]
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{0,20}://(?:[^@/\s\"']*@)?(" + _HOST + r")")
_HOST_PORT = re.compile(r"(" + _HOST + r"):" + _PORT)
# In-cluster names wherever they appear: <service>.<namespace>.svc[.<cluster domain>].
_CLUSTER_NAME = re.compile(r"(?<![A-Za-z0-9.-])((?:[A-Za-z0-9-]+\.){2,3}svc(?:\.[A-Za-z0-9-]+)*)",
                           re.IGNORECASE)
# host=payments, "upstream": "payments:8080", peer: payments...
_LINE_KEYS = (r"host|hostname|upstream|upstream_host|upstream_addr|service|server|target|peer"
              r"|addr|address|remote|remote_addr|backend|endpoint|dest|destination|authority")
_KEYED_HOST = re.compile(
    r"(?<![A-Za-z0-9_])(?:" + _LINE_KEYS + r")[\"']?\s*[=:]\s*[\"']?(" + _HOST + r")",
    re.IGNORECASE)
# dial tcp payments:5432, lookup payments on 10.96.0.10:53, connect to payments...
_VERB_HOST = re.compile(
    r"\b(?:dial (?:tcp|udp)[46]?|lookup|connect(?:ing|ion)? to|calling|call to"
    r"|request to|proxying to|resolve|resolving)\s+(" + _HOST + r")",
    re.IGNORECASE)
# The last word of a variable or flag name that says its value is an address.
_ADDRESS_WORDS = frozenset({
    "host", "hostname", "hosts", "service", "svc", "url", "uri", "addr", "address", "endpoint",
    "upstream", "backend", "server", "servers", "target", "brokers",
})
_WORDS = re.compile(r"[A-Za-z0-9]+")
# Last labels of names that stay inside the cluster (or the host): never an outside host.
_IN_CLUSTER_SUFFIXES = frozenset({"local", "internal", "localdomain", "svc", "cluster"})
_ITEM_SEPARATORS = re.compile(r"[,;\s]+")


def normalize_host(text: str) -> str | None:
    """``Payments.Shop.svc.cluster.local:8080`` -> ``payments.shop``; None for what is not an
    in-cluster name (an IP address, ``api.stripe.com``, ``localhost``, a word with a slash)."""
    labels = _host_labels(text)
    if labels is None:
        return None
    if len(labels) == 1:
        name, namespace = labels[0], None
    elif len(labels) == 2:
        name, namespace = labels
    elif labels[2] == "svc":
        name, namespace = labels[0], labels[1]
    elif len(labels) >= 4 and labels[3] == "svc":
        name, namespace = labels[1], labels[2]  # a StatefulSet pod: <pod>.<service>.<ns>.svc
    else:
        return None
    if not _SERVICE_LABEL.fullmatch(name) or name in _NOT_HOSTS:
        return None
    return name if namespace is None else f"{name}.{namespace}"


def _host_labels(text: str) -> list[str] | None:
    """The DNS labels of a host name, lower-cased, without its port and trailing dot; None for
    what is not a host name (a bad port, an empty or overlong name, a label DNS refuses)."""
    host = text.strip().strip("[]'\"").lower()
    host, _, port = host.partition(":")
    if port and not port.isdigit():
        return None
    host = host.rstrip(".")
    if not host or len(host) > 253:
        return None
    labels = host.split(".")
    return labels if all(_DNS_LABEL.fullmatch(label) for label in labels) else None


def _names_an_address(name: str) -> bool:
    words = _WORDS.findall(name)
    return bool(words) and words[-1].lower() in _ADDRESS_WORDS


def external_host(text: str) -> str | None:
    """``API.Stripe.com:443`` -> ``api.stripe.com``: a host name outside the cluster, or None
    (an in-cluster ``*.svc`` or ``*.cluster.local`` name, one label alone, an IP address, a
    last label that is not a word). ``payments.shop`` passes: only whoever knows the namespaces
    can tell a Service of namespace ``shop`` from a host under a top-level domain ``shop``."""
    labels = _host_labels(text)
    if labels is None or len(labels) < 2:
        return None
    host = ".".join(labels)
    if not labels[-1].isalpha() or len(labels[-1]) < 2 or labels[-1] in _IN_CLUSTER_SUFFIXES \
            or "svc" in labels or host in _NOT_HOSTS:
        return None
    return host


def _value_candidates(name: str, value: str) -> Iterator[str]:
    """What may be a host in one literal value (of a variable or flag called ``name``)."""
    yield from (m.group(1) for m in _URL.finditer(value))
    yield from (m.group(1) for m in _CLUSTER_NAME.finditer(value))
    for item in _ITEM_SEPARATORS.split(value):
        if _HOST_PORT.fullmatch(item):
            yield item
        elif item and "://" not in item and _names_an_address(name):
            yield item


def _value_hosts(name: str, value: str) -> Iterator[str]:
    """Hosts in one literal value (of a variable or flag called ``name``)."""
    for candidate in _value_candidates(name, value):
        host = normalize_host(candidate)
        if host is not None:
            yield host


def hosts_in_value(name: str, value: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(in-cluster hosts, outside hosts) named by a value of a variable, flag or ConfigMap key
    called ``name``, each in order and once; nothing for a value that looks like a secret."""
    if looks_secret_value(value):
        return (), ()
    inside: dict[str, None] = {}
    outside: dict[str, None] = {}
    for candidate in _value_candidates(name, value[:MAX_LINE_CHARS]):
        host = normalize_host(candidate)
        if host is not None:
            inside[host] = None
        found = external_host(candidate)
        if found is not None:
            outside[found] = None
    return tuple(inside)[:MAX_HOSTS], tuple(outside)[:MAX_HOSTS]


def argument_values(args: tuple[str, ...]) -> Iterator[tuple[str, str, str]]:
    """(flag, value, the words naming it) of each argument worth reading; secrets skipped."""
    hide_next = False
    flag_before: str | None = None
    for arg in args:
        if hide_next:
            hide_next, flag_before = False, None
            continue
        if looks_secret_value(arg):
            flag_before = None
            continue
        flag, equals, value = arg.partition("=")
        if arg.startswith("-") and equals:
            yield flag, value, f"argument {flag}"
            flag_before = None
        elif arg.startswith("-"):
            # "--password hunter2": the next argument is a secret-named flag's value.
            hide_next = bool(SECRET_NAME_PATTERN.search(arg))
            flag_before = None if hide_next else arg
        else:
            yield (flag_before or ""), arg, (f"argument {flag_before}" if flag_before
                                             else "an argument")
            flag_before = None


def template_mentions(template: PodTemplate) -> list[tuple[str, str]]:
    """(host, where it was named: ``env PAYMENTS_URL``, ``argument --upstream of container
    api``), in template order, at most ``MAX_HOSTS``."""
    out: list[tuple[str, str]] = []
    for container in template.containers:
        for var in container.env:
            if var.value is None or looks_secret_value(var.value):
                continue
            out.extend((host, f"env {var.name}") for host in _value_hosts(var.name, var.value))
        for flag, value, where in argument_values(container.command + container.args):
            out.extend((host, f"{where} of container {container.name}")
                       for host in _value_hosts(flag, value))
        if len(out) >= MAX_HOSTS:
            break
    return list(dict.fromkeys(out))[:MAX_HOSTS]


def hosts_in_template(template: PodTemplate) -> frozenset[str]:
    """The hosts its environment values and arguments name (``<service>[.<namespace>]``)."""
    return frozenset(host for host, _ in template_mentions(template))


def _line_candidates(line: str) -> Iterator[str]:
    text = line[:MAX_LINE_CHARS]
    for pattern in (_URL, _CLUSTER_NAME, _KEYED_HOST, _VERB_HOST):
        for match in pattern.finditer(text):
            yield match.group(1)


def hosts_in_line(line: str) -> frozenset[str]:
    """The hosts a log line names: ``host=payments``, ``upstream=payments:8080``,
    ``http://payments/charge``, ``dial tcp payments:5432``, ``payments.shop.svc``..."""
    found: set[str] = set()
    for candidate in _line_candidates(line):
        host = normalize_host(candidate)
        if host is not None:
            found.add(host)
    return frozenset(found)


def external_hosts_in_line(line: str) -> frozenset[str]:
    """The outside hosts a log line names (``dial tcp api.stripe.com:443``,
    ``https://hooks.example.com/x``), as ``external_host`` gives them."""
    found: set[str] = set()
    for candidate in _line_candidates(line):
        host = external_host(candidate)
        if host is not None:
            found.add(host)
    return frozenset(found)


def templates_get(by_workload: Mapping[Any, T], deployment: Deployment) -> T | None:
    """The entry of ``deployment`` in a mapping keyed by ``(namespace, name)``, or by name alone
    (a mapping of one namespace's Deployments)."""
    found = by_workload.get((deployment.namespace, deployment.name))
    return by_workload.get(deployment.name) if found is None else found


def _text(line: str | LogLine) -> str:
    return line if isinstance(line, str) else line.line


def selects(selector: Iterable[tuple[str, str]], labels: Iterable[tuple[str, str]]) -> bool:
    """Every pair of a non-empty selector is among the labels."""
    pairs = tuple(selector)
    have = set(labels)
    return bool(pairs) and all(pair in have for pair in pairs)


@dataclass(frozen=True, slots=True)
class Dependency:
    """A Deployment a workload calls, and what said so."""

    namespace: str
    deployment: str
    # The Service it is reached through; None when a host merely equals the Deployment's name.
    service: str | None
    # "env PAYMENTS_URL names Service payments", "its error lines name host payments (12 lines)"
    evidence: tuple[str, ...] = ()
    # How many of the workload's recent error lines name it.
    error_lines: int = 0

    @property
    def key(self) -> WorkloadKey:
        return (self.namespace, self.deployment)

    def named_by(self, host: str, *, namespace: str) -> bool:
        """``host`` (as ``hosts_in_line`` gives it, seen from ``namespace``) names it."""
        name, _, host_namespace = host.partition(".")
        if (host_namespace or namespace) != self.namespace:
            return False
        return name in (self.service, self.deployment)


@dataclass(frozen=True, slots=True)
class Dependencies:
    """For each workload, the Deployments it calls, strongest evidence first."""

    edges: Mapping[WorkloadKey, tuple[Dependency, ...]] = field(
        default_factory=lambda: MappingProxyType({}))

    def of(self, namespace: str, deployment: str) -> tuple[Dependency, ...]:
        return self.edges.get((namespace, deployment), ())

    def on(self, namespace: str, deployment: str) -> tuple[WorkloadKey, ...]:
        """The workloads that call ``namespace/deployment``, sorted."""
        return tuple(sorted(key for key, deps in self.edges.items()
                            if any(d.key == (namespace, deployment) for d in deps)))


class Resolver:
    """Hosts to Deployments, through the Services of the host's namespace."""

    def __init__(self, deployments: Iterable[Deployment], services: Iterable[Service]) -> None:
        self._deployments: dict[str, list[Deployment]] = {}
        # The Deployments whose pods carry each label pair, per namespace: a Service's selector
        # is checked against those of one of its pairs, not against every Deployment (hundreds
        # of Services over hundreds of Deployments).
        self._labelled: dict[tuple[str, tuple[str, str]], list[Deployment]] = {}
        for dep in deployments:
            self._deployments.setdefault(dep.namespace, []).append(dep)
            for pair in dep.pod_labels:
                self._labelled.setdefault((dep.namespace, pair), []).append(dep)
        self._services = {(s.namespace, s.name): s for s in services}
        self._cache: dict[tuple[str, str], tuple[tuple[str, str, str | None], ...]] = {}

    def resolve(self, host: str, *, namespace: str) -> tuple[tuple[str, str, str | None], ...]:
        """(namespace, Deployment, Service or None) for each Deployment the host reaches."""
        name, _, named_namespace = host.partition(".")
        key = (named_namespace or namespace, name)
        if key not in self._cache:
            self._cache[key] = self._lookup(*key)
        return self._cache[key]

    def _lookup(self, namespace: str, name: str) -> tuple[tuple[str, str, str | None], ...]:
        deployments = self._deployments.get(namespace, ())
        service = self._services.get((namespace, name))
        if service is not None and service.selector:
            candidates = min((self._labelled.get((namespace, tuple(pair)), ())
                              for pair in service.selector), key=len)
            behind = tuple(sorted((namespace, d.name, service.name) for d in candidates
                                  if selects(service.selector, d.pod_labels)))
            if behind:
                return behind
        return tuple((namespace, d.name, None) for d in deployments if d.name == name)


def _where(service: str | None, namespace: str, target_namespace: str, deployment: str) -> str:
    elsewhere = f" in {target_namespace}" if target_namespace != namespace else ""
    if service is None:
        return f"the Deployment {deployment}{elsewhere} by its name (no Service selects it)"
    return f"Service {service}{elsewhere}"


def learn_dependencies(
    deployments: Iterable[Deployment],
    *,
    templates: Mapping[Any, PodTemplate],
    services: Iterable[Service],
    error_lines: Mapping[Any, Iterable[str | LogLine]] | None = None,
) -> Dependencies:
    """Who calls whom, from each workload's current pod template and its recent error lines,
    through the Services given. ``templates`` and ``error_lines`` are keyed by ``(namespace,
    name)`` of the Deployment, or by its name alone when all are of one namespace."""
    deployments = tuple(deployments)
    resolver = Resolver(deployments, services)
    error_lines = error_lines or {}
    edges: dict[WorkloadKey, tuple[Dependency, ...]] = {}
    for dep in deployments:
        me = (dep.namespace, dep.name)
        evidence: dict[tuple[str, str, str | None], list[str]] = {}
        lines_naming: Counter[tuple[str, str, str | None]] = Counter()

        def add(target: tuple[str, str, str | None], sentence: str) -> None:
            if (target[0], target[1]) == me:
                return
            sentences = evidence.setdefault(target, [])
            if sentence not in sentences:
                sentences.append(sentence)

        template = templates_get(templates, dep)
        if template is not None:
            for host, where in template_mentions(template):
                for target in resolver.resolve(host, namespace=dep.namespace):
                    add(target, f"{where} names "
                                f"{_where(target[2], dep.namespace, target[0], target[1])}")
        host_lines: Counter[tuple[tuple[str, str, str | None], str]] = Counter()
        for index, line in enumerate(templates_get(error_lines, dep) or ()):
            if index >= MAX_LINES_SCANNED:
                break
            targets: set[tuple[str, str, str | None]] = set()
            for host in hosts_in_line(_text(line)):
                for target in resolver.resolve(host, namespace=dep.namespace):
                    if (target[0], target[1]) != me:
                        targets.add(target)
                        host_lines[(target, host)] += 1
            lines_naming.update(targets)
        for (target, host), count in sorted(host_lines.items(), key=lambda kv: (-kv[1], kv[0][1])):
            add(target, f"its error lines name host {host} ({count} "
                        f"{'line' if count == 1 else 'lines'})")
        found: dict[WorkloadKey, Dependency] = {}
        for target, sentences in evidence.items():
            namespace, name, service = target
            known = found.get((namespace, name))
            if known is not None:  # reached through two Services: keep both sentences
                sentences = list(dict.fromkeys((*known.evidence, *sentences)))
                service = known.service or service
            count = max(lines_naming[target], known.error_lines if known else 0)
            found[(namespace, name)] = Dependency(
                namespace=namespace, deployment=name, service=service,
                evidence=tuple(sentences[:MAX_EVIDENCE]), error_lines=count)
        if found:
            ranked = sorted(found.values(), key=lambda d: (-d.error_lines, d.service is None,
                                                           d.namespace, d.deployment))
            edges[me] = tuple(ranked[:MAX_DEPENDENCIES])
    return Dependencies(edges=MappingProxyType(edges))
