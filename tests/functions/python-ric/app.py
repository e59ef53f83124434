"""Stratus test fixture: a provided.al2023 function that runs AWS's own
runtime interface client (awslambdaric) unchanged.  Build the deployable
directory with ../build_python_ric.sh OUT.

Handlers: app.handler (hello + counter), app.fail (raises ValueError("boom"))
"""
count = 0


def handler(event, context):
    global count
    count += 1
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    print("hello from python-ric: name=%s count=%d" % (name, count))
    return {
        "hello": name,
        "count": count,
        "request_id": context.aws_request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "runtime": "awslambdaric",
    }


def fail(event, context):
    raise ValueError("boom")
