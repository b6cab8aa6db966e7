"""Kubernetes' name rules, for the names ``llmserve build --kuberay`` writes into manifests.

A name Kubernetes would refuse makes ``kubectl apply`` fail half-way (the
RayService created, the NetworkPolicy not, or the reverse); checked here, the
build refuses it before writing anything.
"""

from __future__ import annotations

import re

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL = re.compile(_LABEL)
DNS1123_SUBDOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")

MAX_RAYSERVICE_NAME = 47
"""KubeRay's limit: the RayCluster gets 6 more characters, and its Services' names
(``-serve-svc``) must stay within 63."""


def _check(value: str, what: str, pattern: re.Pattern[str], rule: str, max_length: int) -> str:
    if not pattern.fullmatch(value) or len(value) > max_length:
        raise ValueError(f"{what} {value!r} is not {rule}, at most {max_length} characters")
    return value


def rayservice_name(value: str, what: str = "--name") -> str:
    """A RayService name, as KubeRay's webhook checks it: a DNS-1035 label of at most 47."""
    rule = "a RayService name: lower-case letters, digits and '-', starting with a letter"
    return _check(value, what, DNS1035_LABEL, rule, MAX_RAYSERVICE_NAME)


def namespace_name(value: str, what: str) -> str:
    """A namespace name: a DNS-1123 label."""
    rule = "a namespace name: lower-case letters, digits and '-'"
    return _check(value, what, DNS1123_LABEL, rule, 63)


def object_name(value: str, what: str) -> str:
    """The name of a Secret or most other objects: a DNS-1123 subdomain."""
    rule = "a Kubernetes object name: lower-case letters, digits, '-' and '.'"
    return _check(value, what, DNS1123_SUBDOMAIN, rule, 253)


def label_value(text: str, taken: set[str] | None = None) -> str:
    """``text`` made into a valid label value (and DNS-1123 label), unique among ``taken``."""
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63].strip("-") or "x"
    name, n = base, 1
    while taken is not None and name in taken:
        n += 1
        suffix = f"-{n}"
        name = base[: 63 - len(suffix)].strip("-") + suffix
    return name
