"""What every Ray pod of the RayService gets in its environment, and from where.

- The Serve flags llmserve sets on a local Ray (``serve_env``), as plain values.
- Ray token auth, with the token from the Secret.
- The API keys (``{env: NAME}``) and an optional ``HF_TOKEN`` from the Secret;
  a literal key in the config is refused, since it would be written into the
  manifest.
"""

from __future__ import annotations

from typing import Any

from llmserve.config import ApiKeyFromEnv, AppConfig, ConfigError, ConfigIssue
from llmserve.runtime.ray import Install, serve_env

DEFAULT_SECRET = "llmserve-secrets"
IMAGE_INSTALL = Install(python="/app/.venv/bin/python", package="/app/llmserve")
"""Where llmserve is in the images (docker/): Ray's HAProxy starts llmserve's launcher."""
RAY_TOKEN_KEY = "auth_token"
"""The Secret key KubeRay reads the Ray token from (``authOptions.secretName``)."""


RAY_AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")


def secret_env(config: AppConfig, secret: str) -> list[dict[str, Any]]:
    """API keys (and an optional HF_TOKEN) from the Secret.

    Refused: a literal key, and a key named like the Ray token or a variable
    the manifest sets itself (the API key would be, or replace, the Ray token).
    """
    taken = {RAY_TOKEN_KEY, *RAY_AUTH_ENV, *serve_env(config, IMAGE_INSTALL)}
    issues = []
    refs = config.ingress.key_refs()  # the anonymous keys and every tenant's
    for path, key in refs:
        if isinstance(key, str):
            message = (
                "a literal key would be written into the manifest; use {env: NAME} "
                f"and put the key in the Kubernetes Secret '{secret}'"
            )
            issues.append(ConfigIssue(f"ingress.{path}", message))
        elif key.env in taken:
            message = f"{key.env} is the Ray token or a Ray setting in the pods; use another name"
            issues.append(ConfigIssue(f"ingress.{path}.env", message))
    if issues:
        raise ConfigError(issues)
    names = [key.env for _, key in refs if isinstance(key, ApiKeyFromEnv)]
    env = [_from_secret(name, secret) for name in dict.fromkeys(names)]
    if "HF_TOKEN" not in names:
        # Gated Hugging Face models (Llama) need it; the pods start without it.
        env.append(_from_secret("HF_TOKEN", secret, optional=True))
    return env


def _from_secret(
    name: str, secret: str, optional: bool = False, key: str | None = None
) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key or name}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def pod_env(config: AppConfig) -> list[dict[str, Any]]:
    """The Ray and Serve flags llmserve sets on a local Ray (``serve_env``), for every pod."""
    return [{"name": k, "value": v} for k, v in serve_env(config, IMAGE_INSTALL).items()]


def ray_auth(secret: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Ray token auth: the ``authOptions`` KubeRay acts on, and the same in each container.

    With ``authOptions`` KubeRay gives every Ray container (its init and
    autoscaler containers too) the token from ``secret``, and its own dashboard
    client uses it. The containers name it as well: an operator older than
    ``authOptions`` (KubeRay 1.5.1) prunes the field, and Ray must then still
    start with token auth, so that the deploy never becomes ready instead of
    running an open control plane.
    """
    mode, token = RAY_AUTH_ENV
    options = {"mode": "token", "secretName": secret}
    return options, [
        {"name": mode, "value": "token"},
        _from_secret(token, secret, key=RAY_TOKEN_KEY),
    ]
