"""OpenAPI specs read into tools: operations, parameters by location, JSON bodies, local
references, auth, and specs refused with the reason."""

from __future__ import annotations

import json

import pytest
import yaml

from tusk.tools.openapi import ApiAuth, SpecInvalid, build_request, read_spec

SPEC = """
openapi: 3.0.3
info: {title: Pets, version: "1"}
servers: [{url: "https://pets.example.com/v1"}]
paths:
  /pets/{petId}:
    parameters:
      - {name: petId, in: path, schema: {type: integer}}
    get:
      operationId: getPet
      summary: One pet
      parameters:
        - {name: fields, in: query, schema: {type: string}}
        - {name: X-Trace, in: header, schema: {type: string}}
  /pets:
    post:
      summary: Add a pet
      requestBody:
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Pet"}
components:
  schemas:
    Pet:
      type: object
      required: [name]
      properties:
        name: {type: string}
        tag: {type: string}
"""


def test_each_operation_becomes_a_tool_with_its_parameters() -> None:
    get_pet, add_pet = read_spec(SPEC)
    assert get_pet.name == "getPet"
    assert add_pet.name == "post_pets"
    assert get_pet.schema() == {
        "type": "object",
        "properties": {
            "petId": {"type": "integer"},
            "fields": {"type": "string"},
            "X-Trace": {"type": "string"},
        },
        "required": ["petId"],
    }
    assert add_pet.schema()["properties"] == {"name": {"type": "string"}, "tag": {"type": "string"}}
    assert add_pet.schema()["required"] == ["name"]


def test_requests_put_each_parameter_where_it_belongs() -> None:
    get_pet, add_pet = read_spec(json.dumps(yaml.safe_load(SPEC)))
    auth = ApiAuth.of(
        {"auth_type": "api_key_header", "api_key_header_prefix": "bearer", "api_key_value": "k1"}
    )
    out = build_request(get_pet, {"petId": 7, "fields": "name", "X-Trace": "t"}, auth)
    assert out.url == "https://pets.example.com/v1/pets/7"
    assert out.params == {"fields": "name"}
    assert out.headers == {"X-Trace": "t", "Authorization": "Bearer k1"}
    assert not out.has_json
    query_auth = ApiAuth.of(
        {"auth_type": "api_key_query", "api_key_query_param": "key", "api_key_value": "k2"}
    )
    out = build_request(add_pet, {"name": "Rex"}, query_auth)
    assert (out.method, out.json, out.params) == ("post", {"name": "Rex"}, {"key": "k2"})


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("swagger: '2.0'\npaths: {}", "only OpenAPI 3.x specs are supported; this one is swagger"),
        ("openapi: 3.0.0\npaths: {}", "the spec has no `paths`"),
        ("openapi: 3.0.0\npaths: {/a: {get: {}}}", "the spec names no server"),
        ("- a\n- b", "must be a JSON or YAML object"),
        ("openapi: 3.0.0\n  bad: [", "neither JSON nor YAML"),
        (
            "openapi: 3.1.0\nservers: [{url: 'https://x.org'}]\npaths: {/a: {get: {parameters: "
            "[{$ref: 'other.yaml#/p'}]}}}",
            "only references inside the spec are supported",
        ),
        ("openapi: 3.1.0\nservers: [{url: 'https://x.org'}]\npaths: {/a: {}}", "no operations"),
    ],
)
def test_invalid_specs_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(SpecInvalid) as caught:
        read_spec(text)
    assert reason in caught.value.message


def test_a_relative_server_is_read_against_the_specs_url() -> None:
    text = "openapi: 3.1.0\nservers: [{url: /api}]\npaths: {/a: {get: {operationId: a}}}"
    (op,) = read_spec(text, base_url="https://host.example/spec.yaml")
    assert op.server_url == "https://host.example/api"


def test_unknown_auth_types_are_refused() -> None:
    with pytest.raises(Exception, match="auth_type must be"):
        ApiAuth.of({"auth_type": "oauth"})
