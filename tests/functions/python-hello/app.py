"""Stratus test fixture: hello world with module state (Python).

Handler: app.handler
"""
import os

count = 0

ENV_KEYS = (
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_EXECUTION_ENV",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "TZ",
    "GREETING",
)


def handler(event, context):
    global count
    count += 1
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    print("hello from python-hello: name=%s count=%d request_id=%s" % (name, count, context.aws_request_id))
    return {
        "hello": name,
        "count": count,
        "request_id": context.aws_request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ},
    }
