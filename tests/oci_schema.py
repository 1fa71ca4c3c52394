"""The OCI image-spec v1.1.1 JSON schemas from tests/vectors, served under the URLs their $refs use."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from tests.conftest import VECTORS

BASE = "https://opencontainers.org/schema/"
# The URLs image-spec's own schema/schema.go registers for each file.
URLS = {
    "config-schema.json": ["image/config"],
    "content-descriptor.json": ["descriptor", "image/content-descriptor.json"],
    "defs-descriptor.json": ["image/descriptor/mediaType", "defs-descriptor.json", "image/defs-descriptor.json"],
    "defs.json": ["defs.json", "image/defs.json", "image/descriptor/defs.json"],
    "image-index-schema.json": ["image/index"],
    "image-layout-schema.json": ["image/layout"],
    "image-manifest-schema.json": ["image/manifest"],
}


@cache
def _registry() -> Registry:
    registry = Registry()
    for name, urls in URLS.items():
        resource = Resource.from_contents(json.loads((VECTORS / "oci-schema" / name).read_text()), default_specification=DRAFT4)
        registry = registry.with_resources((BASE + url, resource) for url in urls)
    return registry


def validator(name: str) -> Draft4Validator:
    schema = json.loads((VECTORS / "oci-schema" / name).read_text())
    return Draft4Validator(schema, registry=_registry())


def errors(name: str, document: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(name).iter_errors(document)]
