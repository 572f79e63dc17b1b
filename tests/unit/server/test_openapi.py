"""/openapi.json documents every route the service has, its references resolve, and the example requests it
shows are accepted by the protocols' decoders and the record validator (the fuzzer starts from them)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import jsonschema_rs
import pytest
import yaml
from fastapi import FastAPI

from shipml.config import settings_from_mapping
from shipml.core.records import Accepted, RecordValidator
from shipml.core.schema import FeatureSchema
from shipml.examples.churn import churn_config
from shipml.server.app import create_app
from shipml.server.openapi import OPERATIONS, model_openapi
from shipml.server.protocols import mlflow, oip_v2
from shipml.server.protocols import shipml as shipml_protocol

KEY = {"name": "ops", "sha256": "0" * 64, "roles": ["predict", "admin"]}
SCHEMA = FeatureSchema.from_dict(
    {
        "target": {"name": "churn", "task": "binary", "classes": ["no", "yes"]},
        "features": [
            {"name": "tenure", "kind": "integer", "min": 1.5, "max": 72},
            {"name": "charges", "kind": "numeric", "nullable": True},
            {"name": "debt", "kind": "numeric", "max": -3},
            {"name": "contract", "kind": "categorical", "categories": ["monthly", "yearly"]},
            {"name": "region", "kind": "categorical"},
            {"name": "senior", "kind": "boolean"},
        ],
    }
)


def app_with(auth: bool = True) -> FastAPI:
    """The service's FastAPI app (under its ASGI layers), as create_app builds it; no model loaded."""
    raw = yaml.safe_load(churn_config())
    raw["auth"] = {"enabled": auth, "keys": [KEY] if auth else []}
    asgi: Any = create_app(settings_from_mapping(raw, "test"))
    while not isinstance(asgi, FastAPI):
        asgi = asgi.app
    return asgi


def loaded(app: FastAPI, auth: bool = True) -> FastAPI:
    """``app`` with a deployment of SCHEMA at version 3 in its state (what model_openapi reads)."""
    variant = SimpleNamespace(name="churn", version="3", bundle=SimpleNamespace(schema=SCHEMA, classes=["no", "yes"]))
    deployment = SimpleNamespace(primary=variant, variants=(variant,))
    settings = SimpleNamespace(serve=SimpleNamespace(max_batch=100), auth=SimpleNamespace(enabled=auth))
    app.state.shipml = SimpleNamespace(manager=SimpleNamespace(current=deployment), settings=settings)
    return app


def operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method, path): op for path, ops in spec["paths"].items() for method, op in ops.items()}


def refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [value["$ref"]] if "$ref" in value else []
        return own + [r for v in value.values() for r in refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in refs(v)]
    return []


def resolve(spec: dict[str, Any], ref: str) -> Any:
    target: Any = spec
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return target


@pytest.mark.parametrize("with_model", [False, True])
def test_every_route_is_documented_with_its_answers_and_every_reference_resolves(with_model: bool) -> None:
    app = loaded(app_with()) if with_model else app_with()
    spec = model_openapi(app)
    documented = operations(spec)
    assert set(documented) == set(OPERATIONS)  # a new route needs its entry in server/openapi.py
    for (method, path), op in documented.items():
        responses = op["responses"]
        assert ("200" in responses and "422" not in responses) or op.get("requestBody"), (method, path)
        assert all("content" in r for r in responses.values()), (method, path)
        if OPERATIONS[(method, path)].role is not None:
            assert op["security"] == [{"bearer": []}, {"apiKey": []}]
            assert {"401", "403", "429"} <= set(responses)
            assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True
        else:
            assert "security" not in op
    for ref in refs(spec):
        resolve(spec, ref)
    ready = documented[("get", "/health/ready")]["responses"]["503"]["content"]["application/json"]["schema"]
    assert ready == {"$ref": "#/components/schemas/Ready"}  # {"status": "not_ready", "reason"}, not an error
    reload = documented[("post", "/admin/reload")]
    assert reload["parameters"][0]["name"] == "force"
    assert reload["responses"]["502"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Reload"
    }
    error_of = {"/predict": "Error", "/invocations": "MlflowError", "/v2/models/{name}/infer": "V2Error"}
    for path, error in error_of.items():
        assert documented[("post", path)]["responses"]["413"]["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{error}"
        }


def test_without_auth_no_operation_asks_for_a_key() -> None:
    spec = model_openapi(loaded(app_with(auth=False), auth=False))
    assert all("security" not in op for op in operations(spec).values())


def test_v2_paths_name_the_served_model_and_versions() -> None:
    spec = model_openapi(loaded(app_with()))
    parameters = operations(spec)[("post", "/v2/models/{name}/versions/{version}/infer")]["parameters"]
    schemas = {p["name"]: p["schema"] for p in parameters}
    assert schemas["name"] == {"type": "string", "enum": ["churn"]}
    assert schemas["version"] == {"type": "string", "enum": ["3"]}


def test_the_example_requests_fit_the_document_and_are_accepted() -> None:
    spec = model_openapi(loaded(app_with()))
    examples = {}
    for (method, path), op in operations(spec).items():
        body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
        if "example" in body:
            schema = {**body["schema"], "components": spec["components"]}
            assert jsonschema_rs.validator_for(schema).is_valid(body["example"]), (method, path)
            examples[path] = body["example"]
    assert set(examples) == {
        "/predict",
        "/predict/batch",
        "/invocations",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    }
    validator = RecordValidator(SCHEMA)
    signature = oip_v2.ModelSignature.of("churn", "3", SCHEMA, ["no", "yes"])
    records = [
        shipml_protocol.one_record(examples["/predict"]),
        *(r.features for r in shipml_protocol.batch_records(examples["/predict/batch"], 100)),
        *mlflow.decode_invocations(examples["/invocations"], 100),
        *oip_v2.decode_infer(examples["/v2/models/{name}/infer"], memoryview(b""), signature, 100).records(),
    ]
    assert len(records) == 5
    for i, record in enumerate(records):
        assert isinstance(validator.check(record, i), Accepted), (i, record)
