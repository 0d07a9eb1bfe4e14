import json

import pytest


@pytest.mark.gen_test
async def test_root_and_health(http_client, base_url):
    response = await http_client.fetch(base_url + "/")
    assert json.loads(response.body)["name"] == "matcha-orchestrator"
    response = await http_client.fetch(base_url + "/health")
    assert json.loads(response.body)["database"] == "up"


@pytest.mark.gen_test
async def test_url_intake_dispatches(http_client, base_url, inference):
    response = await http_client.fetch(
        base_url + "/matches/youtube", method="POST", body=json.dumps({"url": "https://x.test/v"})
    )
    assert response.code == 201
    match = json.loads(response.body)
    jobs = await inference.wait_for_jobs(1)
    assert jobs[0]["match_id"] == match["id"]
    assert jobs[0]["video_url"] == "https://x.test/v"
