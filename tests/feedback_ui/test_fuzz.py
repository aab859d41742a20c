"""API fuzzing with schemathesis against the running service (a real server process on a real SQLite file).

Every operation of the OpenAPI document gets schema-valid and schema-violating requests (bounded, derandomized
examples), as a labeler, as the admin and without a token: no answer may be a 5xx, every status must be one the
document lists, and every answer's body must match the schema documented for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from feedback_ui.server import ServerHandle, start_server_in_background
from rlhf.store import PreferenceStore
from tests.feedback_ui.conftest import bearer, queue_pairs

EXAMPLES = 25
"""Examples per operation and generation mode (positive: schema-valid, negative: schema-violating)."""
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


@pytest.fixture
def server(workspace: Path, store: PreferenceStore) -> Iterator[ServerHandle]:
    queue_pairs(store, 40, labels_wanted=2)
    with start_server_in_background(workspace, port=0) as handle:
        yield handle


@pytest.mark.slow
def test_no_request_gets_a_server_error(server: ServerHandle, store: PreferenceStore) -> None:
    _, token = store.add_labeler("fuzzing labeler, not a name the fuzzer will guess 7f3a")
    identities = {"labeler": bearer(token), "admin": bearer(server.admin_token), "anonymous": {}}
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results)  # the document holds no operation schemathesis cannot read
    assert len(operations) >= 14, [operation.label for operation in operations]
    tried: dict[str, set[int]] = {}
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode), who=st.sampled_from(sorted(identities)))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case: schemathesis.Case[Any], who: str) -> None:
                response = case.call_and_validate(headers=identities[who], checks=CHECKS, timeout=30)
                tried.setdefault(case.operation.label, set()).add(response.status_code)

            try:
                fuzz()
            except Unsatisfiable:
                # Nothing to violate: the operation takes no parameters and no body (GET /api/health).
                assert mode == schemathesis.GenerationMode.NEGATIVE, operation.label
    assert set(tried) == {operation.label for operation in operations}
    # The fuzzer got past authentication and validation somewhere: it exercised the routes, not only the guards.
    assert any(200 <= code < 300 for codes in tried.values() for code in codes)
    assert any(code == 422 for codes in tried.values() for code in codes)
