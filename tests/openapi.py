"""Check requests and responses against Trigger.dev's OpenAPI file (tests only).

``load_openapi()`` finds the YAML file (``$BGJOBS_TEST_OPENAPI``, else ``spec/`` in the
repository, else the shared ``../shared/spec/`` next to it) and returns an :class:`OpenAPI`,
or ``None`` when there is none, so tests can skip with a clear reason.

Schemas are validated with ``jsonschema``'s Draft 2020-12 validator (OpenAPI 3.1's
dialect), with every ``$ref`` resolved inside the file. The file's schemas do not forbid
unknown properties, so a misspelt field (``externalID``) would pass; ``strict=True``
(the default) also fails on any property a schema does not declare.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = ["OpenAPI", "load_openapi", "spec_path"]

_FILE_NAME = "trigger-dev-openapi.yaml"
_DOC_URI = "urn:bgjobs:trigger-dev-openapi"
_REPO = Path(__file__).resolve().parent.parent
_METHODS = ("get", "put", "post", "delete", "patch")


def spec_path() -> Optional[Path]:
    """Where the OpenAPI file is, or ``None``."""
    candidates = [
        os.environ.get("BGJOBS_TEST_OPENAPI"),
        _REPO / "spec" / _FILE_NAME,
        _REPO.parent / "shared" / "spec" / _FILE_NAME,
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@functools.lru_cache(maxsize=1)
def load_openapi() -> Optional[OpenAPI]:
    path = spec_path()
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        return OpenAPI(yaml.safe_load(f))


def _escape(token: str) -> str:
    """One JSON-pointer token (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")


class OpenAPI:
    """One parsed OpenAPI document and the operations in it."""

    def __init__(self, document: Dict[str, Any]) -> None:
        self.document = document
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(_DOC_URI, resource)

    # -- lookup ---------------------------------------------------------------------

    def operation(self, method: str, path: str) -> Tuple[str, Dict[str, Any]]:
        """The path template and operation object serving ``method path``.

        ``path`` is a concrete, percent-encoded request path (no query string); a
        template segment ``{name}`` matches any one segment, and literal segments win.
        """
        method = method.lower()
        segments = path.strip("/").split("/")
        best: Optional[Tuple[int, str]] = None
        for template, item in self.document["paths"].items():
            if method not in item:
                continue
            parts = template.strip("/").split("/")
            if len(parts) != len(segments):
                continue
            literal = 0
            for part, seg in zip(parts, segments):
                if part.startswith("{") and part.endswith("}"):
                    if not seg:
                        break
                elif part == seg:
                    literal += 1
                else:
                    break
            else:
                if best is None or literal > best[0]:
                    best = (literal, template)
        if best is None:
            raise AssertionError(f"{method.upper()} {path} is not an operation in the OpenAPI file")
        return best[1], self.document["paths"][best[1]][method]

    def _pointer(self, *tokens: str) -> str:
        return _DOC_URI + "#/" + "/".join(_escape(t) for t in tokens)

    def _resolve(self, schema: Any) -> Any:
        while isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
            ref = schema["$ref"]
            assert ref.startswith("#/"), f"only local $refs are supported, got {ref!r}"
            node: Any = self.document
            for token in ref[2:].split("/"):
                node = node[token.replace("~1", "/").replace("~0", "~")]
            schema = node
        return schema

    def parameters(self, method: str, path: str) -> List[Dict[str, Any]]:
        """The operation's parameters, the path item's shared ones included."""
        template, op = self.operation(method, path)
        shared = self.document["paths"][template].get("parameters", [])
        return [self._resolve(p) for p in [*shared, *op.get("parameters", [])]]

    def has_request_body(self, method: str, path: str) -> bool:
        return "requestBody" in self.operation(method, path)[1]

    # -- validation -----------------------------------------------------------------

    def validate_request(self, method: str, path: str, body: Any, *, strict: bool = True) -> None:
        """Fail (AssertionError) unless ``body`` fits the operation's JSON request body."""
        template, op = self.operation(method, path)
        assert "requestBody" in op, f"{method.upper()} {template} takes no request body"
        tokens = ["paths", template, method.lower(), "requestBody", "content"]
        tokens += ["application/json", "schema"]
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        self._validate(tokens, schema, body, strict, f"request {method.upper()} {template}")

    def validate_response(
        self, method: str, path: str, status: int, body: Any, *, strict: bool = True
    ) -> None:
        """Fail unless ``body`` fits the documented JSON response for ``status``."""
        template, op = self.operation(method, path)
        response = self._resolve(op.get("responses", {}).get(str(status)))
        assert response is not None, f"{method.upper()} {template} documents no {status}"
        content = response.get("content", {}).get("application/json")
        if content is None:
            return  # documented without a body schema: anything goes
        tokens = ["paths", template, method.lower(), "responses", str(status)]
        tokens += ["content", "application/json", "schema"]
        where = f"response {status} to {method.upper()} {template}"
        self._validate(tokens, content["schema"], body, strict, where)

    def validate_query(self, method: str, path: str, query: Mapping[str, List[str]]) -> None:
        """Fail unless every query parameter is declared and has its declared type."""
        declared = {p["name"]: p for p in self.parameters(method, path) if p.get("in") == "query"}
        for name, values in query.items():
            assert name in declared, f"query parameter {name!r} is not in the OpenAPI file"
            kind = declared[name].get("schema", {}).get("type")
            for value in values:
                if kind == "integer":
                    assert value.lstrip("-").isdigit(), f"{name}={value!r} is not an integer"
                elif kind == "boolean":
                    assert value in ("true", "false"), f"{name}={value!r} is not a boolean"

    def _validate(
        self, tokens: List[str], schema: Any, instance: Any, strict: bool, where: str
    ) -> None:
        validator = Draft202012Validator({"$ref": self._pointer(*tokens)}, registry=self._registry)
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        problems = [f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors]
        if strict:
            problems += self._undeclared(schema, instance, "")
        assert not problems, f"{where} does not match the OpenAPI file:\n  " + "\n  ".join(problems)

    def _properties(self, schema: Any) -> Optional[Dict[str, Any]]:
        """Declared properties, merged through ``allOf``; ``None`` if none are declared."""
        schema = self._resolve(schema)
        if not isinstance(schema, dict):
            return None
        found: Optional[Dict[str, Any]] = None
        if isinstance(schema.get("properties"), dict):
            found = dict(schema["properties"])
        for part in schema.get("allOf", []):
            sub = self._properties(part)
            if sub is not None:
                found = {**(found or {}), **sub}
        return found

    def _undeclared(self, schema: Any, instance: Any, where: str) -> List[str]:
        schema = self._resolve(schema)
        if isinstance(instance, list) and isinstance(schema, dict) and "items" in schema:
            problems = []
            for i, item in enumerate(instance):
                problems += self._undeclared(schema["items"], item, f"{where}/{i}")
            return problems
        if not isinstance(instance, dict):
            return []
        properties = self._properties(schema)
        if properties is None:
            return []  # free-form object (a task payload, metadata)
        problems = []
        for key, value in instance.items():
            if key not in properties:
                problems.append(f"{where or '<root>'}: property {key!r} is not declared")
            else:
                problems += self._undeclared(properties[key], value, f"{where}/{key}")
        return problems
