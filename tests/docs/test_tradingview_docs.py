"""docs/tradingview.md's alert templates, rendered as TradingView renders them and sent the
way TradingView sends them (token in the body, ``text/plain``) to a real server on paper."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from tests.support import ROOT, ServerProcess, base_env
from tests.unit.core.pipeline.test_trading_alerts import FILLED
from tests.unit.core.pipeline.test_trading_alerts import readme_templates as doc_templates


def issue_token(env: dict[str, str], cwd) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage_tokens.py"), "issue", "--label", "tradingview", "--ttl", "3600"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[0].split()[-1]


def render(template: str, n: int, token: str) -> str:
    for placeholder, value in FILLED.items():
        template = template.replace(placeholder, value)
    assert "{{" not in template, template
    return template.replace("PASTE-THE-TOKEN", token).replace(FILLED["{{timenow}}"], f"{FILLED['{{timenow}}']}-{n}")


def test_docs_templates_through_the_real_server(tmp_path):
    env = base_env(tmp_path, WEBHOOK_SECRET="", RATE_LIMIT_KEY="principal")  # token mode only, as for TradingView
    token = issue_token(env, tmp_path)
    templates = doc_templates()
    assert len(templates) >= 15
    answers = []
    with ServerProcess(env, tmp_path) as server, httpx.Client(base_url=server.url, timeout=15) as http:
        for n, template in enumerate(templates):
            message = render(template, n, token)
            payload = json.loads(message)
            if payload.get("action") == "cancel":  # cancel the stop order an earlier template placed
                stop = next(a for a in answers if a.get("order", {}).get("order_type") == "stop")
                message = json.dumps({**payload, "client_order_id": stop["order"]["client_order_id"]})
            response = http.post(
                "/webhook", content=message.encode(), headers={"Content-Type": "text/plain; charset=utf-8"}
            )
            answer = response.json()
            assert response.status_code == 200, (template, answer)
            assert token not in response.text
            answers.append(answer)
        # Each alert is in the journal under the token's principal.
        journal = http.get(f"/alerts/{answers[0]['alert_id']}", headers={"Authorization": f"Bearer {token}"}).json()
        assert journal["principal"] == "token:tradingview" and token not in json.dumps(journal)
    states = {a["status"] for a in answers}
    assert {"filled", "submitted", "nothing_to_do", "canceled"} <= states, states
