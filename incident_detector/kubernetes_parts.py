"""Only the parts of the ``kubernetes`` package that the detector uses are imported.

``import kubernetes.client`` first runs ``kubernetes/__init__.py``, which imports every
subpackage: the kubeconfig loader (and with it requests, requests-oauthlib and oauthlib), the
dynamic client, watch, stream (websocket-client), informers, leader election and the YAML
utilities. The detector needs the low-level ``ApiClient`` (``kubernetes.client`` loads its modules
on demand), the in-cluster loader, and the kubeconfig loader only when there is no service
account. The rest is about 7 MB of resident memory in every pod (``python -m bench.footprint
--memory`` prints what each import costs).

``register()`` puts the packages whose ``__init__`` imports all that (``kubernetes``,
``kubernetes.config``, ``kubernetes.utils``) into ``sys.modules`` without running their
``__init__``. Their submodules import as usual (``import kubernetes.watch`` works), each when
asked for; a name that only a skipped ``__init__`` binds is imported from its submodule
(``from kubernetes.config.kube_config import load_kube_config``, not
``kubernetes.config.load_kube_config``). When ``kubernetes`` is already imported (a program that
imported it before this package), nothing is done.
"""

from __future__ import annotations

import importlib.util
import sys

# Parents first: a subpackage's spec is found through its parent's __path__.
PACKAGES = ("kubernetes", "kubernetes.config", "kubernetes.utils")


def register() -> None:
    if PACKAGES[0] in sys.modules:
        return
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.submodule_search_locations is None:
            return  # not installed (or not a package): the plain import reports it
        module = importlib.util.module_from_spec(spec)  # __path__ set, __init__ not run
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
