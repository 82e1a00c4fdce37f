"""Figure 5: the request page and the form submission under 50 concurrent clients.

gunicorn (2 sync worker processes, as many as cores: measured faster here than
threaded workers for this page and for OCSP) serves MyCert as configured for production
(collected static files, PostgreSQL sessions, CSRF, rate limits counted in Redis, a
reverse proxy in front: ``MYCERT_TRUSTED_PROXY_COUNT=1``). Each professional is logged
in by a session created directly in the database (what the OpenID callback leaves).

- page: ``GET /request/`` by logged-in professionals (sessions taken in turn);
- submission: ``POST /request/`` ("Envoyer", no vendor), each by a different
  professional with their CSRF token and their own client address (X-Forwarded-For,
  127.x.y.z), answered by the redirect to "Demande envoyée." (302). The issuance tasks
  wait in Redis (no worker runs during this figure);
- reference: ``GET /pki/ca/issuing.cer``, the floor of the same stack (gunicorn,
  Django, every middleware) without database, session or template.

Two loads of 50 clients: *users* (benchmarks.users: each pauses ~1 s between
requests, as a person does) and *saturation* (wrk, 50 connections, no pause: the
latency is then the queue behind the other 49 clients on 2 cores).
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.common import Context, Figure, median
from benchmarks.loadgen import wrk
from benchmarks.procs import Gunicorn

CLIENTS = 50
THINK = 1.0  # seconds, mean of an exponential pause between a user's requests


def _sessions(count: int) -> list[tuple[str, str]]:
    """Log ``count`` new professionals in; return (session key, CSRF secret) for each.

    Each session holds what the portal's login leaves: the user and the login's signed
    ID token, which a request must carry (``mycert.request_proof``); without it the form
    refuses to submit.
    """
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    from benchmarks.common import make_professionals
    from mycert.views.auth import ID_TOKEN_SESSION_KEY
    from tests.support.id_tokens import id_token_for

    professionals = make_professionals(count, prefix="p5")
    store = SessionStore()
    expire = timezone.now() + timedelta(hours=2)
    rows, pairs = [], []
    for professional in professionals:
        key = secrets.token_hex(16)
        user = professional.user
        data = {
            "_auth_user_id": str(user.pk),
            "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
            "_auth_user_hash": user.get_session_auth_hash(),
            ID_TOKEN_SESSION_KEY: id_token_for(professional),
        }
        rows.append(Session(session_key=key, session_data=store.encode(data), expire_date=expire))
        pairs.append((key, secrets.token_hex(16)))
    Session.objects.bulk_create(rows, batch_size=2000)
    return pairs


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _summary(runs: list[dict[str, Any]], *, little: bool = False) -> dict[str, Any]:
    rate = "little_rps" if little else "ok_rps"
    return {q: median([r[f"{q}_ms"] for r in runs]) for q in ("p50", "p90", "p95", "p99")} | {
        "rps": median([r[rate] for r in runs]),
        "errors": sum(r["error_count"] for r in runs),
    }


def run(
    ctx: Context, runs: int, seconds: float, posts_per_run: int | None = None
) -> dict[str, Any]:
    from benchmarks.users import get, post, run_users

    folder = ctx.env.root / "web"
    folder.mkdir(exist_ok=True)
    port = ctx.env.web_port
    posts_per_run = posts_per_run or (300 if ctx.quick else 500)
    user_posts = int(seconds / THINK) + 6  # more than a user can send in a run
    ctx.say("web: logging professionals in (sessions in the database)")
    page_sessions = _sessions(500)
    # Closed loop: each run's posts plus one per connection (in flight when it stops).
    post_sessions = _sessions((posts_per_run + CLIENTS) * (runs + 1))
    user_post_sessions = _sessions(CLIENTS * user_posts * runs)

    def address(i: int) -> str:
        return f"127.{1 + i // 62500}.{(i // 250) % 250 + 1}.{i % 250 + 1}"

    def form(csrf: str) -> str:
        return f"csrfmiddlewaretoken={csrf}&vendor=none&terms_accepted=on"

    pages = _write(
        folder / "pages.txt", [f"GET\t/request/\tsessionid={key}\t\t" for key, _ in page_sessions]
    )
    floor = _write(folder / "floor.txt", ["GET\t/pki/ca/issuing.cer\t\t\t"])
    post_lines = [
        f"POST\t/request/\tsessionid={key}; csrftoken={csrf}\t{address(i)}\t{form(csrf)}"
        for i, (key, csrf) in enumerate(post_sessions)
    ]
    server = Gunicorn(
        ctx.env,
        workers=2,
        worker_class="sync",
        extra_env={"MYCERT_TRUSTED_PROXY_COUNT": "1", "CACHE_URL": "redis://127.0.0.1:6379/9"},
    )
    url = ctx.env.base_url + "/"
    ctx.say("web: starting gunicorn")
    server.start()
    result: dict[str, Any] = {
        "server": server.description,
        "clients": CLIENTS,
        "think_seconds": THINK,
    }
    try:
        ctx.say(
            f"web: {server.description}, {CLIENTS} users thinking {THINK:.0f} s, {runs} × {seconds:.0f} s"
        )
        load = {"script": "web_requests.lua", "connections": CLIENTS}
        # Warm-up: every thread's connection, templates, translations.
        wrk(url, args=[str(pages)], seconds=2, **load)
        wrk(url, args=[str(floor)], seconds=1, **load)
        # The first submission in each web process imports Celery's publishing side
        # (~0.3 s): warm that up too, with professionals of its own.
        size = posts_per_run + CLIENTS
        warmup = _write(folder / "posts-0.txt", post_lines[:size])
        wrk(url, args=[str(warmup), str(posts_per_run)], seconds=seconds, **load)
        users: dict[str, list[dict[str, Any]]] = {"floor": [], "page": [], "post": []}
        for run_index in range(runs):
            users["floor"].append(
                run_users(port, [[get("/pki/ca/issuing.cer", port, "")] * 100] * CLIENTS,
                          think=THINK, seconds=seconds, ok=200)
            )  # fmt: skip
            users["page"].append(
                run_users(
                    port,
                    [[get("/request/", port, f"sessionid={key}")] * 100 for key, _ in page_sessions[:CLIENTS]],
                    think=THINK,
                    seconds=seconds,
                    ok=200,
                )
            )  # fmt: skip
            mine = user_post_sessions[run_index * CLIENTS * user_posts :][: CLIENTS * user_posts]
            users["post"].append(
                run_users(
                    port,
                    [
                        [
                            post("/request/", port, f"sessionid={key}; csrftoken={csrf}",
                                 address(100_000 + run_index * 10_000 + u * user_posts + n), form(csrf))
                            for n, (key, csrf) in enumerate(mine[u * user_posts : (u + 1) * user_posts])
                        ]
                        for u in range(CLIENTS)
                    ],
                    think=THINK,
                    seconds=seconds,
                    ok=302,
                )
            )  # fmt: skip
        ctx.say(f"web: closed loop (wrk -c{CLIENTS}, no think time), {runs} runs")
        closed: dict[str, list[dict[str, Any]]] = {"floor": [], "page": [], "post": []}
        closed["floor"] = [
            wrk(url, args=[str(floor)], seconds=seconds, **load) for _ in range(runs)
        ]
        closed["page"] = [wrk(url, args=[str(pages)], seconds=seconds, **load) for _ in range(runs)]
        for run_index in range(1, runs + 1):  # posts-0 was the warm-up
            chunk = post_lines[run_index * size : (run_index + 1) * size]
            posts = _write(folder / f"posts-{run_index}.txt", chunk)
            closed["post"].append(
                wrk(url, args=[str(posts), str(posts_per_run)], seconds=seconds, **load)
            )
    finally:
        server.stop()
    result |= {"users": users, "closed": closed}
    summary = {
        "users": {k: _summary(v) for k, v in users.items()},
        "closed": {k: _summary(v, little=k == "post") for k, v in closed.items()},
    }
    result["summary"] = summary
    for what, title, goal_bearing in (
        ("page", "Request page GET /request/", True),
        ("post", "Form submission POST /request/", False),
    ):
        u, c = summary["users"][what], summary["closed"][what]
        uf, cf = summary["users"]["floor"], summary["closed"]["floor"]
        ctx.add(
            Figure(
                key=f"web.{what}.users.p95",
                title=f"{title}, p95, {CLIENTS} users thinking ~{THINK:.0f} s",
                value=u["p95"],
                unit="ms",
                reference=uf["p95"],
                reference_label="GET /pki/ca/issuing.cer (stack floor), same users",
                ratio=u["p95"] / uf["p95"],
                goal="p95 ≤ 50 ms" if goal_bearing else "— (reported)",
                met=(u["p95"] <= 50 and u["errors"] == 0) if goal_bearing else None,
                runs=runs,
                notes=(
                    f"p50 {u['p50']:.1f} ms, p99 {u['p99']:.1f} ms, {u['rps']:.0f}/s offered by "
                    f"{CLIENTS} users, errors {u['errors']}; {server.description}"
                ),
                details={**u, **({"goal_index": u["p95"] / 50} if goal_bearing else {})},
            )
        )
        ctx.add(
            Figure(
                key=f"web.{what}.closed.p95",
                title=f"{title}, p95, {CLIENTS} clients without pause (saturation)",
                value=c["p95"],
                unit="ms",
                reference=cf["p95"],
                reference_label="GET /pki/ca/issuing.cer (stack floor), same load",
                ratio=c["p95"] / cf["p95"],
                goal="p95 ≤ 50 ms (not reachable closed-loop, see text)"
                if goal_bearing
                else "— (reported)",
                met=(c["p95"] <= 50) if goal_bearing else None,
                runs=runs,
                notes=(
                    f"p50 {c['p50']:.1f} ms, p99 {c['p99']:.1f} ms, {c['rps']:.0f}/s "
                    f"(floor {cf['rps']:.0f}/s), errors {c['errors']}"
                ),
                details={**c, **({"goal_index": c["p95"] / 50} if goal_bearing else {})},
            )
        )
    return result
