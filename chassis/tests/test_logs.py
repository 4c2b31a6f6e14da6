from __future__ import annotations

import logging

import orjson
import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from souq_chassis.logs import configure_logging


def test_logs_are_json_lines_with_service_version_and_trace_ids(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("catalog", "9.9.9", "INFO")
    tracer = TracerProvider().get_tracer("test")
    try:
        with tracer.start_as_current_span("work") as span:
            structlog.get_logger("test").info("price_changed", sku="KIT-0001")
            logging.getLogger("uvicorn.error").warning("from the standard library")
        outside = span.get_span_context()
        structlog.get_logger("test").info("no_span")
        lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    first, second, third = lines
    assert first["event"] == "price_changed" and first["sku"] == "KIT-0001"
    assert first["service"] == "catalog" and first["version"] == "9.9.9"
    assert first["trace_id"] == format(outside.trace_id, "032x")
    assert first["span_id"] == format(outside.span_id, "016x")
    assert second["event"] == "from the standard library" and second["level"] == "warning"
    assert second["trace_id"] == first["trace_id"]
    assert "trace_id" not in third
