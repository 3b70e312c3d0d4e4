"""Writes the spec schemathesis checks Hypedeck against: upstream's openapi.yaml with the
documented differences between that file and upstream's code (hypeman-semantics §2.2–2.3),
and without the operations Hypedeck answers 501 `not_implemented`.

    overlay.py <openapi.yaml> <base url> <token> <out.yaml>

Differences added, each one what upstream's server itself does:
  * 401 `Error` on every operation that declares bearerAuth (its auth middleware runs
    before every handler; the file lists 401 on a few operations only);
  * 400 `Error` on every operation with parameters or a body (its request validator
    answers 400 "Bad Request" for any violation; the file lists 400 on some only);
  * log streams (`text/event-stream`, `schema: {type: string}` = the whole body is text):
    schemathesis checks each event against that schema, so it gets upstream's event shape
    instead, stricter than the file: every event is `data: <JSON-encoded string>` (§3.1).
One restriction: the log stream's `follow` parameter is left out; a followed stream never
ends by design (tests/vm and the API unit tests cover it), and schemathesis would wait out its
request timeout on each one.
Nothing else is changed: response bodies, status codes of handlers and content types are
checked against upstream's file as it is.
"""

import json
import sys
import urllib.error
import urllib.request

import yaml

METHODS = ("get", "put", "post", "delete", "patch")
LOG_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string", "pattern": r'^"(?:[^"\\]|\\.)*"$'}},
}


def concrete(path):
    return "/".join("x" if p.startswith("{") else p for p in path.split("/"))


def not_implemented(base, token, method, path):
    request = urllib.request.Request(
        base + concrete(path),
        method=method.upper(),
        data=None if method == "get" else b"{}",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return False
    except urllib.error.HTTPError as error:
        if error.code != 501:
            return False
        return json.loads(error.read()).get("code") == "not_implemented"


def main():
    source, base, token, out = sys.argv[1:5]
    with open(source) as f:
        spec = yaml.safe_load(f)
    error = {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    dropped = []
    kept = 0
    for path, item in list(spec["paths"].items()):
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            if not_implemented(base, token, method, path):
                del item[method]
                dropped.append(f"{method.upper()} {path}")
                continue
            kept += 1
            if path.endswith("/logs"):
                op["parameters"] = [p for p in op.get("parameters", []) if p.get("name") != "follow"]
            responses = op.setdefault("responses", {})
            for response in responses.values():
                stream = response.get("content", {}).get("text/event-stream")
                if stream and stream.get("schema") == {"type": "string"}:
                    stream["schema"] = LOG_EVENT
            codes = {str(c) for c in responses}
            secured = op.get("security", spec.get("security")) not in (None, [])
            if secured and "401" not in codes:
                responses[401] = error
            has_input = op.get("parameters") or item.get("parameters") or op.get("requestBody")
            if has_input and "400" not in codes:
                responses[400] = error
        if not any(m in item for m in METHODS):
            del spec["paths"][path]
    with open(out, "w") as f:
        yaml.safe_dump(spec, f, sort_keys=False)
    print(f"overlay: {kept} operations checked, {len(dropped)} not implemented by Hypedeck:")
    for op in dropped:
        print(f"  {op}")


main()
