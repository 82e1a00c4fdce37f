"""One page for every refusal: what happened, what to do, whom to ask (with a 4xx)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.functional import Promise


def render_problem(
    request: HttpRequest,
    *,
    title: str | Promise,
    explanation: str | Promise,
    what_to_do: str | Promise = "",
    status: int = 400,
    back_url: str = "",
    back_label: str | Promise = "",
) -> HttpResponse:
    """Render the plain-words problem page with ``status``."""
    return render(
        request,
        "mycert/problem.html",
        {
            "title": title,
            "explanation": explanation,
            "what_to_do": what_to_do,
            "back_url": back_url,
            "back_label": back_label,
        },
        status=status,
    )
