"""Versions and aliases: PublishVersion, ListVersionsByFunction, qualified
Get/Invoke/Delete, aliases with weighted routing, and their persistence,
against the recorded AWS contract (../shared/reference/lambda-api.md §6)."""

from __future__ import annotations

import json
import math

from stratus_harness import (
    ROLE,
    arn,
    expect_error,
    new_server,
    remove_data_dir,
    unique_name,
    wait_active,
    wait_updated,
    zip_files,
)


def tagged(tag: str) -> bytes:
    """A function that says which code ran and what its context saw."""
    return zip_files({"app.py": (
        "import os\n\n"
        "def handler(event, context):\n"
        f"    return {{'tag': {tag!r}, 'version': context.function_version,\n"
        "            'arn': context.invoked_function_arn,\n"
        "            'env': os.environ.get('AWS_LAMBDA_FUNCTION_VERSION')}\n"
    )})


def call(lam, **kwargs) -> tuple[dict, dict]:
    resp = lam.invoke(Payload=b"{}", **kwargs)
    out = json.loads(resp["Payload"].read())
    assert "FunctionError" not in resp, out
    return resp, out


def two_versions(lam, fns) -> str:
    """A function with version 1 (code "one") and version 2 (code "two");
    $LATEST runs "three"."""
    name = fns.create(tagged("one"))
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    lam.update_function_code(FunctionName=name, ZipFile=tagged("two"))
    wait_updated(lam, name)
    assert lam.publish_version(FunctionName=name)["Version"] == "2"
    lam.update_function_code(FunctionName=name, ZipFile=tagged("three"))
    wait_updated(lam, name)
    return name


def test_publish_is_a_snapshot_and_republishing_changes_nothing(lam, fns):
    name = fns.create(tagged("one"), Description="the function")
    latest = lam.get_function_configuration(FunctionName=name)
    v1 = lam.publish_version(FunctionName=name, Description="first")
    assert v1["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert v1["Version"] == "1"
    assert v1["FunctionArn"] == f"{arn(name)}:1"
    assert v1["CodeSha256"] == latest["CodeSha256"]
    assert v1["Description"] == "first"
    assert v1["State"] == "Active"
    assert v1["RevisionId"] != latest["RevisionId"]
    again = lam.publish_version(FunctionName=name)
    assert (again["Version"], again["RevisionId"]) == ("1", v1["RevisionId"])

    expect_error(lam.publish_version, 412, "PreconditionFailedException", "Revision Id",
                 FunctionName=name, RevisionId="5d4b5a49-0000-0000-0000-000000000000")
    expect_error(lam.publish_version, 400, "InvalidParameterValueException", "CodeSHA256",
                 FunctionName=name, CodeSha256="bm90IHRoZSBoYXNo")
    lam.update_function_configuration(FunctionName=name, MemorySize=256)
    current = wait_updated(lam, name)
    v2 = lam.publish_version(FunctionName=name, RevisionId=current["RevisionId"],
                             CodeSha256=current["CodeSha256"])
    assert v2["Version"] == "2" and v2["MemorySize"] == 256
    # Versions are immutable: version 1 keeps its memory.
    assert lam.get_function_configuration(FunctionName=name, Qualifier="1")["MemorySize"] == 128

    # Publish=True on create and on a code update.
    other = fns.name("-pub")
    created = lam.create_function(FunctionName=other, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                                  Code={"ZipFile": tagged("one")}, Publish=True)
    fns.track(other)
    assert created["Version"] == "1" and created["FunctionArn"] == f"{arn(other)}:1"
    wait_active(lam, other)
    updated = lam.update_function_code(FunctionName=other, ZipFile=tagged("two"), Publish=True)
    assert updated["Version"] == "2"
    wait_updated(lam, other)
    _, out = call(lam, FunctionName=other, Qualifier="2")
    assert out["tag"] == "two"


def test_a_version_runs_its_own_code_after_latest_changed(lam, fns):
    name = two_versions(lam, fns)
    for qualifier, tag in (("1", "one"), ("2", "two"), ("$LATEST", "three")):
        resp, out = call(lam, FunctionName=name, Qualifier=qualifier)
        assert out["tag"] == tag, (qualifier, out)
        assert resp["ExecutedVersion"] == qualifier
        assert out["version"] == qualifier and out["env"] == qualifier
        assert out["arn"] == f"{arn(name)}:{qualifier}"
    resp, out = call(lam, FunctionName=name)
    assert out["tag"] == "three" and resp["ExecutedVersion"] == "$LATEST" and out["arn"] == arn(name)
    # A qualified ARN as the name.
    resp, out = call(lam, FunctionName=f"{arn(name)}:1")
    assert out["tag"] == "one" and resp["ExecutedVersion"] == "1"
    got = lam.get_function(FunctionName=name, Qualifier="1")
    assert got["Configuration"]["Version"] == "1"
    assert got["Configuration"]["FunctionArn"] == f"{arn(name)}:1"
    expect_error(lam.invoke, 404, "ResourceNotFoundException", f"{arn(name)}:9", FunctionName=name, Qualifier="9")
    expect_error(lam.get_function_configuration, 404, "ResourceNotFoundException",
                 FunctionName=name, Qualifier="nosuchalias")

    # ListVersionsByFunction: $LATEST first, paged.
    seen, marker = [], None
    while True:
        kwargs = {"Marker": marker} if marker else {}
        page = lam.list_versions_by_function(FunctionName=name, MaxItems=2, **kwargs)
        assert len(page["Versions"]) <= 2
        seen += [(v["Version"], v["FunctionArn"]) for v in page["Versions"]]
        marker = page.get("NextMarker")
        if not marker:
            break
    assert seen == [("$LATEST", f"{arn(name)}:$LATEST"), ("1", f"{arn(name)}:1"), ("2", f"{arn(name)}:2")]
    listed = []
    for page in lam.get_paginator("list_functions").paginate(FunctionVersion="ALL",
                                                            PaginationConfig={"PageSize": 2}):
        listed += [f["Version"] for f in page["Functions"] if f["FunctionName"] == name]
    assert listed == ["$LATEST", "1", "2"]
    default = [f["Version"] for page in lam.get_paginator("list_functions").paginate()
               for f in page["Functions"] if f["FunctionName"] == name]
    assert default == ["$LATEST"]

    # Deleting a version: its code stays for the others; $LATEST cannot go.
    expect_error(lam.delete_function, 400, "InvalidParameterValueException", "$LATEST",
                 FunctionName=name, Qualifier="$LATEST")
    assert lam.delete_function(FunctionName=name, Qualifier="1")["ResponseMetadata"]["HTTPStatusCode"] == 204
    expect_error(lam.invoke, 404, "ResourceNotFoundException", FunctionName=name, Qualifier="1")
    _, out = call(lam, FunctionName=name, Qualifier="2")
    assert out["tag"] == "two"
    # Numbers are never reused.
    lam.update_function_code(FunctionName=name, ZipFile=tagged("four"))
    wait_updated(lam, name)
    assert lam.publish_version(FunctionName=name)["Version"] == "3"


def test_an_alias_routes_by_weight(lam, fns):
    name = two_versions(lam, fns)
    alias = lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1",
                             RoutingConfig={"AdditionalVersionWeights": {"2": 0.3}})
    assert alias["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert alias["AliasArn"] == f"{arn(name)}:live"
    assert alias["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.3}}
    n, p = 400, 0.3
    twos = 0
    for _ in range(n):
        resp, out = call(lam, FunctionName=name, Qualifier="live")
        assert out["arn"] == f"{arn(name)}:live"
        assert resp["ExecutedVersion"] == out["version"]
        assert out["tag"] == {"1": "one", "2": "two"}[out["version"]]
        twos += out["version"] == "2"
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(twos - n * p) <= 4 * sigma, f"version 2 ran {twos} of {n} times at weight {p}"

    # Without routing, every invoke runs the primary version.
    lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2",
                     RoutingConfig={"AdditionalVersionWeights": {}})
    for _ in range(5):
        resp, out = call(lam, FunctionName=f"{arn(name)}:live")
        assert resp["ExecutedVersion"] == "2" and out["tag"] == "two"


def test_alias_rules(lam, fns):
    name = two_versions(lam, fns)
    created = lam.create_alias(FunctionName=name, Name="blue", FunctionVersion="1", Description="d")
    assert "RoutingConfig" not in created
    got = lam.get_alias(FunctionName=name, Name="blue")
    assert got["FunctionVersion"] == "1" and got["RevisionId"] == created["RevisionId"]
    expect_error(lam.create_alias, 409, "ResourceConflictException", f"{arn(name)}:blue",
                 FunctionName=name, Name="blue", FunctionVersion="2")
    expect_error(lam.create_alias, 400, "ValidationException", "name",
                 FunctionName=name, Name="123", FunctionVersion="1")
    expect_error(lam.create_alias, 404, "ResourceNotFoundException", f"{arn(name)}:7",
                 FunctionName=name, Name="green", FunctionVersion="7")
    for weights, status, code in (
        ({"2": 1.5}, 400, "ValidationException"),
        ({"1": 0.5}, 400, "InvalidParameterValueException"),
        ({"$LATEST": 0.5}, 400, "InvalidParameterValueException"),
        ({"1": 0.1, "2": 0.1}, 400, "InvalidParameterValueException"),
    ):
        expect_error(lam.create_alias, status, code, FunctionName=name, Name="green",
                     FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": weights})
    expect_error(lam.create_alias, 400, "InvalidParameterValueException", FunctionName=name, Name="green",
                 FunctionVersion="$LATEST", RoutingConfig={"AdditionalVersionWeights": {"1": 0.5}})
    lam.create_alias(FunctionName=name, Name="green", FunctionVersion="$LATEST")
    _, out = call(lam, FunctionName=name, Qualifier="green")
    assert out["tag"] == "three" and out["version"] == "$LATEST"

    expect_error(lam.update_alias, 412, "PreconditionFailedException", FunctionName=name, Name="blue",
                 FunctionVersion="2", RevisionId="00000000-0000-0000-0000-000000000000")
    updated = lam.update_alias(FunctionName=name, Name="blue", RevisionId=created["RevisionId"],
                               RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}})
    assert updated["RevisionId"] != created["RevisionId"] and updated["Description"] == "d"
    expect_error(lam.update_alias, 404, "ResourceNotFoundException", "Alias not found",
                 FunctionName=name, Name="nope", FunctionVersion="1")
    expect_error(lam.get_alias, 404, "ResourceNotFoundException", "Cannot find alias arn",
                 FunctionName=name, Name="nope")

    # A version an alias uses cannot be deleted, as primary or as additional.
    for v in ("1", "2"):
        expect_error(lam.delete_function, 409, "ResourceConflictException", "blue",
                     FunctionName=name, Qualifier=v)

    names = []
    for page in lam.get_paginator("list_aliases").paginate(FunctionName=name, PaginationConfig={"PageSize": 1}):
        names += [a["Name"] for a in page["Aliases"]]
    assert names == ["blue", "green"]
    assert [a["Name"] for a in lam.list_aliases(FunctionName=name, FunctionVersion="2")["Aliases"]] == ["blue"]

    assert lam.delete_alias(FunctionName=name, Name="blue")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert lam.delete_alias(FunctionName=name, Name="blue")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert lam.delete_function(FunctionName=name, Qualifier="1")["ResponseMetadata"]["HTTPStatusCode"] == 204
    # Deleting the function takes its versions and aliases.
    lam.delete_function(FunctionName=name)
    expect_error(lam.get_function, 404, "ResourceNotFoundException", FunctionName=name, Qualifier="2")
    fns.create(tagged("again"), name=name)
    assert lam.list_aliases(FunctionName=name)["Aliases"] == []
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]] == ["$LATEST"]
    assert lam.publish_version(FunctionName=name)["Version"] == "1"


def test_versions_and_aliases_survive_a_restart():
    first = new_server("versions")
    first.start()
    data_dir = first.data_dir
    name = unique_name("versions-persist")
    try:
        lam = first.client()
        lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": tagged("one")}, Publish=True)
        wait_active(lam, name)
        lam.update_function_code(FunctionName=name, ZipFile=tagged("two"))
        wait_updated(lam, name)
        alias = lam.create_alias(FunctionName=name, Name="prod", FunctionVersion="1")
        v1 = lam.get_function_configuration(FunctionName=name, Qualifier="1")
    finally:
        first.stop()
    second = new_server("versions-restarted", data_dir=data_dir)
    second.start()
    try:
        lam = second.client()
        after = lam.get_function_configuration(FunctionName=name, Qualifier="1")
        for key in ("FunctionArn", "Version", "CodeSha256", "RevisionId", "LastModified", "MemorySize"):
            assert after[key] == v1[key], (key, v1[key], after[key])
        got = lam.get_alias(FunctionName=name, Name="prod")
        assert (got["FunctionVersion"], got["RevisionId"]) == ("1", alias["RevisionId"])
        resp, out = call(lam, FunctionName=name, Qualifier="prod")
        assert out["tag"] == "one" and resp["ExecutedVersion"] == "1"
        _, out = call(lam, FunctionName=name)
        assert out["tag"] == "two"
        # The number after the highest one published, also after a restart.
        assert lam.publish_version(FunctionName=name)["Version"] == "2"
        lam.delete_function(FunctionName=name)
    finally:
        second.stop()
        remove_data_dir(data_dir)
