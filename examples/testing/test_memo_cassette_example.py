"""Testing code that calls skills, without calling them: skillyard's pytest cassettes.

The first run records each test's calls to ``cassettes/<this module>/<name>.json``;
later runs replay them (mode ``once``), so the tests need neither the network nor
the API key. Run ``pytest --skillyard-record-mode=rewrite`` to record afresh.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skillyard.errors import CassetteMiss

SKILLS = Path(__file__).parent / "skills"
API_KEY = os.environ.get("WEATHER_API_KEY", "not-a-real-key")


@pytest.fixture
def skillyard_runtime_options() -> dict:
    """The in-memory runtime of every test here loads the example skills."""
    return {"roots": {"project": [SKILLS]}}


@pytest.mark.skillyard_cassette("oslo", mode="once", filter_args=["request_id"])
def test_forecast(skillyard_runtime, cassette):
    result = skillyard_runtime.call(
        "weather-forecast", {"city": "Oslo", "api_key": API_KEY, "request_id": "r-81"}
    )
    assert result.output["city"] == "Oslo"
    assert len(result.output["days"]) == 3
    # replayed from the committed cassette; "live" only while recording it
    assert result.source == ("cassette" if cassette.existed else "live")
    # the key and the filtered request id never reach the file
    text = cassette.path.read_text()
    assert API_KEY not in text and "r-81" not in text


@pytest.mark.skillyard_cassette("oslo", mode="none", filter_args=["request_id"])
def test_replay_only_refuses_a_call_it_has_not_seen(skillyard_runtime):
    with pytest.raises(CassetteMiss, match="Bergen"):
        skillyard_runtime.call("weather-forecast", {"city": "Bergen", "api_key": API_KEY})


def test_a_cassette_named_after_the_test(skillyard_runtime, cassette):
    first = skillyard_runtime.call("weather-forecast", {"city": "Lima", "api_key": API_KEY})
    again = skillyard_runtime.call("weather-forecast", {"city": "Lima", "api_key": API_KEY})
    assert first.output == again.output
    assert cassette.path.name == "test_a_cassette_named_after_the_test.json"
