"""Layers: PublishLayerVersion, GetLayerVersion(ByArn), ListLayerVersions,
ListLayers, DeleteLayerVersion, and functions running with their layers in
/opt (python imports from /opt/python; later layers overwrite earlier ones),
with boto3, against the recorded AWS contract
(../shared/reference/lambda-api.md, section 9)."""

from __future__ import annotations

import base64
import hashlib
import json
import re

from stratus_harness import expect_error, wait_updated, zip_files

APP = r'''
import os


def handler(event, context):
    import shared
    out = {"shared": shared.VALUE, "path": os.environ.get("PATH", "")}
    try:
        import only_a
        out["only_a"] = only_a.VALUE
    except ImportError:
        out["only_a"] = None
    out["tool"] = os.path.exists("/opt/bin/tool")
    return out
'''

LAYER_RE = r"arn:aws:lambda:us-east-1:000000000000:layer:{name}"


def _layer(lam, name: str, files: dict, **kw) -> dict:
    return lam.publish_layer_version(LayerName=name, Content={"ZipFile": zip_files(files)}, **kw)


def _invoke(lam, name: str) -> dict:
    resp = lam.invoke(FunctionName=name, Payload=b"{}")
    body = json.loads(resp["Payload"].read())
    assert "FunctionError" not in resp, body
    return body


def _cleanup_layer(lam, name: str) -> None:
    for v in lam.list_layer_versions(LayerName=name)["LayerVersions"]:
        lam.delete_layer_version(LayerName=name, VersionNumber=v["Version"])


def test_publish_get_list_delete(lam, fns):
    name = fns.name("layer")
    zip_a = zip_files({"python/shared.py": "VALUE = 'a'\n"})
    try:
        first = lam.publish_layer_version(LayerName=name, Content={"ZipFile": zip_a}, Description="first",
                                          CompatibleRuntimes=["python3.12"], CompatibleArchitectures=["x86_64"],
                                          LicenseInfo="MIT")
        assert first["ResponseMetadata"]["HTTPStatusCode"] == 201
        assert first["Version"] == 1
        assert first["LayerArn"] == LAYER_RE.format(name=name)
        assert first["LayerVersionArn"] == first["LayerArn"] + ":1"
        assert first["Description"] == "first"
        assert first["CompatibleRuntimes"] == ["python3.12"]
        assert first["LicenseInfo"] == "MIT"
        assert first["Content"]["CodeSize"] == len(zip_a)
        assert first["Content"]["CodeSha256"] == base64.b64encode(hashlib.sha256(zip_a).digest()).decode()
        assert first["Content"]["Location"].startswith("http")
        assert re.match(r"^\d{4}-\d{2}-\d{2}T", first["CreatedDate"])
        second = _layer(lam, name, {"python/shared.py": "VALUE = 'b'\n"})
        assert second["Version"] == 2

        got = lam.get_layer_version(LayerName=name, VersionNumber=1)
        assert got["LayerVersionArn"] == first["LayerVersionArn"]
        assert got["Content"]["CodeSha256"] == first["Content"]["CodeSha256"]
        by_arn = lam.get_layer_version_by_arn(Arn=second["LayerVersionArn"])
        assert by_arn["Version"] == 2

        versions = lam.list_layer_versions(LayerName=name)["LayerVersions"]
        assert [v["Version"] for v in versions] == [2, 1], "newest first"
        only_py = lam.list_layer_versions(LayerName=name, CompatibleRuntime="python3.12")["LayerVersions"]
        assert [v["Version"] for v in only_py] == [1]
        layers = {entry["LayerName"]: entry for entry in lam.list_layers()["Layers"]}
        assert layers[name]["LatestMatchingVersion"]["Version"] == 2
        assert layers[name]["LayerArn"] == first["LayerArn"]

        lam.delete_layer_version(LayerName=name, VersionNumber=2)
        lam.delete_layer_version(LayerName=name, VersionNumber=2)  # 204 again
        expect_error(lam.get_layer_version, 404, "ResourceNotFoundException",
                     "The resource you requested does not exist.", LayerName=name, VersionNumber=2)
        third = _layer(lam, name, {"python/shared.py": "VALUE = 'c'\n"})
        assert third["Version"] == 3, "version numbers are never reused"
    finally:
        _cleanup_layer(lam, name)


def test_python_function_imports_from_its_layers_in_order(lam, fns):
    a, b = fns.name("la"), fns.name("lb")
    try:
        la = _layer(lam, a, {"python/shared.py": "VALUE = 'a'\n", "python/only_a.py": "VALUE = 'only-a'\n",
                             "bin/tool": "#!/bin/sh\necho tool\n"})["LayerVersionArn"]
        lb = _layer(lam, b, {"python/shared.py": "VALUE = 'b'\n"})["LayerVersionArn"]
        code = zip_files({"app.py": APP})
        name = fns.create(code, Layers=[la, lb])
        conf = lam.get_function_configuration(FunctionName=name)
        assert [layer["Arn"] for layer in conf["Layers"]] == [la, lb]
        assert all(layer["CodeSize"] > 0 for layer in conf["Layers"])
        out = _invoke(lam, name)
        assert out["shared"] == "b", "the later layer wins"
        assert out["only_a"] == "only-a", "both layers are in /opt"
        assert out["tool"] is True
        assert "/opt/bin" in out["path"].split(":")

        # Reversed order: the other layer wins.
        lam.update_function_configuration(FunctionName=name, Layers=[lb, la])
        wait_updated(lam, name)
        assert _invoke(lam, name)["shared"] == "a"

        # A deleted layer version keeps working for the functions using it.
        lam.delete_layer_version(LayerName=a, VersionNumber=1)
        lam.update_function_configuration(FunctionName=name, Description="new sandbox")
        wait_updated(lam, name)
        assert _invoke(lam, name)["only_a"] == "only-a"

        # No layers: the imports are gone.
        lam.update_function_configuration(FunctionName=name, Layers=[])
        conf = wait_updated(lam, name)
        assert "Layers" not in conf or conf["Layers"] == []
        resp = lam.invoke(FunctionName=name, Payload=b"{}")
        assert resp.get("FunctionError") == "Unhandled"
    finally:
        _cleanup_layer(lam, a)
        _cleanup_layer(lam, b)


def test_layer_errors(lam, fns):
    name = fns.name("lerr")
    code = zip_files({"app.py": APP})
    missing = LAYER_RE.format(name=name) + ":1"
    expect_error(lam.create_function, 400, "InvalidParameterValueException",
                 f"Layer version {missing} does not exist.",
                 FunctionName=fns.name("nolayer"), Runtime="python3.12", Role="arn:aws:iam::000000000000:role/r",
                 Handler="app.handler", Code={"ZipFile": code}, Layers=[missing])
    try:
        arn = _layer(lam, name, {"python/shared.py": "VALUE = 1\n"})["LayerVersionArn"]
        fn = fns.create(code)
        expect_error(lam.update_function_configuration, 400, "InvalidParameterValueException",
                     "Cannot reference more than 5 layers", FunctionName=fn, Layers=[arn] * 6)
        expect_error(lam.update_function_configuration, 400, "InvalidParameterValueException",
                     "same region", FunctionName=fn,
                     Layers=[arn.replace("us-east-1", "eu-west-1")])
        expect_error(lam.update_function_configuration, 400, "ValidationException",
                     FunctionName=fn, Layers=["not-a-layer-arn"])
        expect_error(lam.publish_layer_version, 400, "InvalidParameterValueException",
                     "Could not unzip uploaded file", LayerName=name, Content={"ZipFile": b"PK\x03\x04 nope"})
        expect_error(lam.get_layer_version, 404, "ResourceNotFoundException", LayerName=name, VersionNumber=99)
    finally:
        _cleanup_layer(lam, name)


def test_provided_runtime_bootstrap_from_a_layer(lam, fns):
    from test_runtimes import SHELL_BOOTSTRAP

    name = fns.name("rtlayer")
    try:
        runtime = lam.publish_layer_version(
            LayerName=name,
            Content={"ZipFile": zip_files({"bootstrap": SHELL_BOOTSTRAP}, executable=("bootstrap",))},
        )["LayerVersionArn"]
        fn = fns.create(zip_files({"README": "code without a bootstrap"}), handler="whatever.handler",
                        runtime="provided.al2023", Layers=[runtime], Timeout=5)
        out = _invoke(lam, fn)
        assert out["event"] == {}
        assert out["cwd"] == "/var/task"
    finally:
        _cleanup_layer(lam, name)


def test_layers_urls_and_tags_survive_a_restart():
    import urllib.request

    from stratus_harness import ROLE, new_server, remove_data_dir, unique_name, wait_active

    first = new_server("layers-persist")
    first.start()
    data_dir = first.data_dir
    lam = first.client()
    name, kept, dropped = unique_name("lp-fn"), unique_name("lp-kept"), unique_name("lp-dropped")
    try:
        kept_arn = _layer(lam, kept, {"python/shared.py": "VALUE = 'kept'\n"})["LayerVersionArn"]
        dropped_arn = _layer(lam, dropped, {"python/only_a.py": "VALUE = 'dropped'\n"})["LayerVersionArn"]
        lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": zip_files({"app.py": APP})}, Layers=[dropped_arn, kept_arn],
                            Tags={"team": "core"})
        wait_active(lam, name)
        url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
        # A deleted layer version the function still names: its archive must
        # survive the start-up clean-up of unused code.
        lam.delete_layer_version(LayerName=dropped, VersionNumber=1)
    finally:
        assert first.stop() == 0

    second = new_server("layers-persist-restarted", data_dir=data_dir)
    second.start()
    try:
        lam2 = second.client()
        assert [v["Version"] for v in lam2.list_layer_versions(LayerName=kept)["LayerVersions"]] == [1]
        assert lam2.list_layer_versions(LayerName=dropped)["LayerVersions"] == []
        assert lam2.get_function(FunctionName=name)["Tags"] == {"team": "core"}
        new_url = lam2.get_function_url_config(FunctionName=name)["FunctionUrl"]
        path = url.split("/_stratus/url/")[1]
        assert new_url.endswith(path), (url, new_url)
        with urllib.request.urlopen(new_url, timeout=30) as r:
            out = json.loads(r.read())
        assert out["shared"] == "kept" and out["only_a"] == "dropped", out
        assert _layer(lam2, dropped, {"python/x.py": ""})["Version"] == 2, "numbers survive too"
        lam2.delete_function(FunctionName=name)
        _cleanup_layer(lam2, kept)
        _cleanup_layer(lam2, dropped)
    finally:
        second.stop()
        remove_data_dir(data_dir)


def test_node_function_requires_a_package_from_a_layer(lam, fns):
    name = fns.name("nodelayer")
    try:
        arn = _layer(lam, name, {
            "nodejs/node_modules/greet/index.js": "module.exports = (who) => `hello ${who} from a layer`;\n",
        })["LayerVersionArn"]
        code = zip_files({"index.js": "const greet = require('greet');\n"
                                      "exports.handler = async () => ({greeting: greet('node')});\n"})
        fn = fns.create(code, handler="index.handler", runtime="nodejs20.x", Layers=[arn])
        assert _invoke(lam, fn) == {"greeting": "hello node from a layer"}
    finally:
        _cleanup_layer(lam, name)


def test_changing_only_the_layers_publishes_a_new_version(lam, fns):
    layer = fns.name("pub-layer")
    try:
        a = _layer(lam, layer, {"python/shared.py": "VALUE = 'a'\n"})
        b = _layer(lam, layer, {"python/shared.py": "VALUE = 'b'\n"})
        name = fns.create(zip_files({"app.py": APP}), Layers=[a["LayerVersionArn"]])
        assert lam.publish_version(FunctionName=name)["Version"] == "1"
        lam.update_function_configuration(FunctionName=name, Layers=[b["LayerVersionArn"]])
        wait_updated(lam, name)
        # Same code, other layers: a new version, not the old one again.
        assert lam.publish_version(FunctionName=name)["Version"] == "2"
        assert lam.publish_version(FunctionName=name)["Version"] == "2"
        for qualifier, value in (("1", "a"), ("2", "b")):
            resp = lam.invoke(FunctionName=name, Qualifier=qualifier, Payload=b"{}")
            assert json.loads(resp["Payload"].read())["shared"] == value
    finally:
        _cleanup_layer(lam, layer)
